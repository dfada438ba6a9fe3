"""Runtimes on disk: the side-by-side venvs under runtimes/, the `current`/`previous` links, pruning.

Pure filesystem logic (no systemctl), so it works on a `--root`-staged layout and in unit tests.
Links are written relative (`runtimes/<name>`) so a staged tree stays self-contained; links
written absolute by an older install are read the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ops.from_launcher.layout import FACTS, KEEP_RUNTIMES, OPTILLM_VERSION, PROFILES, Layout


class RuntimeProblem(Exception):
    """A runtime or the links are not what an upgrade needs; the message says what to do."""


@dataclass(frozen=True)
class Runtime:
    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def profile(self) -> str:
        return str(self.manifest.get("profile", "?"))

    @property
    def lock_sha256(self) -> str:
        return str(self.manifest.get("lock_sha256", ""))

    @property
    def optillm_version(self) -> str:
        return str(self.manifest.get("optillm_version", "?"))

    @property
    def refusal(self) -> str | None:
        """Why an upgrade refused it at validation (written by mark_refused), or None."""
        try:
            return refusal_file(self.path).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        return f"{self.name} (optillm {self.optillm_version}, profile {self.profile}, lock {self.lock_sha256[:12]})"


def read_manifest(layout: Layout, runtime_dir: Path) -> dict:
    from ops.from_launcher import manifest

    path = layout.runtime_manifest(runtime_dir)
    try:
        return manifest.read(path)
    except manifest.ManifestProblem as exc:
        if exc.missing:
            raise RuntimeProblem(f"{runtime_dir} is not a runtime: {path.name} is missing (build it with "
                                 "install.sh --upgrade)") from None
        raise RuntimeProblem(f"{path} is unreadable ({exc}): rebuild the runtime with install.sh --upgrade") from None


def load(layout: Layout, runtime_dir: Path) -> Runtime:
    return Runtime(path=runtime_dir, manifest=read_manifest(layout, runtime_dir))


def check_optillm(layout: Layout, runtime: Runtime) -> None:
    """The launcher's own verification of the runtime's optillm (patches.verify_source: the pinned
    version, every patch point's dependencies), run from here before anything starts it."""
    from ops.from_launcher import internals, patches, settings

    site = layout.site_packages(runtime.path)
    if not (site / "optillm").is_dir():
        site = next(iter(sorted(runtime.path.glob("lib/python3*/site-packages"))), site)
    version = internals.dist_version(site, "optillm")
    if version is None:
        raise RuntimeProblem("no optillm is installed in it: rebuild it with install.sh --upgrade")
    try:
        patches.verify_source(site / "optillm" / "server.py", version)
    except settings.ConfigRefused as exc:
        raise RuntimeProblem(f"{exc} (what changed: tools/audit_optillm.py {version}, "
                             "docs/upgrading-optillm.md)") from None


def refusal_file(runtime_dir: Path) -> Path:
    """Why `opsctl runtime upgrade` refused this runtime at validation (absent: never refused)."""
    return runtime_dir / FACTS["REFUSAL_REL"]


def mark_refused(runtime: Runtime, reason: str) -> None:
    """Record why an upgrade refused `runtime`, for opsctl runtime list (one line, replaced each
    time). Best effort: the refusal itself is what the operator is told."""
    path = refusal_file(runtime.path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {' '.join(reason.split())}\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def clear_refused(runtime: Runtime) -> None:
    with contextlib.suppress(OSError):
        refusal_file(runtime.path).unlink(missing_ok=True)


def check_complete(layout: Layout, runtime: Runtime) -> None:
    """What a runtime must hold before anything tries to start it."""
    problems = []
    if runtime.optillm_version != OPTILLM_VERSION:
        problems.append(f"optillm {runtime.optillm_version} (this toolkit pins {OPTILLM_VERSION})")
    if runtime.profile not in PROFILES:
        problems.append(f"unknown profile {runtime.profile!r} (one of {', '.join(PROFILES)})")
    for needed in (runtime.path / "bin" / "python", layout.launcher(runtime.path)):
        if not needed.exists():
            problems.append(f"{needed.relative_to(runtime.path)} missing")
    if problems:
        raise RuntimeProblem(f"runtime {runtime.name} is incomplete: {'; '.join(problems)}; rebuild it with install.sh --upgrade")


def link_target(link: Path) -> Path | None:
    """The runtime directory a link points at, or None if the link is absent or dangling."""
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    if not target.is_absolute():
        target = link.parent / target
    target = Path(os.path.normpath(target))
    return target if target.is_dir() else None


def _same(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def list_runtimes(layout: Layout) -> list[Runtime]:
    """Every built runtime (a directory with a manifest), newest first. Half-built ones are skipped."""
    found = []
    if layout.runtimes.is_dir():
        for child in layout.runtimes.iterdir():
            if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
                continue
            try:
                found.append(load(layout, child))
            except RuntimeProblem:
                continue
    found.sort(key=lambda r: (r.path.stat().st_mtime, r.name), reverse=True)
    return found


def role(layout: Layout, runtime_dir: Path) -> str:
    if _same(runtime_dir, link_target(layout.current)):
        return "current"
    if _same(runtime_dir, link_target(layout.previous)):
        return "previous"
    return ""


def resolve_runtime(layout: Layout, spec: str) -> Path:
    """A runtime given as a path or as a directory name under runtimes/."""
    candidate = Path(spec)
    if not candidate.is_absolute() and "/" not in spec:
        candidate = layout.runtimes / spec
    if not candidate.is_dir():
        raise RuntimeProblem(f"no runtime at {candidate}: give a directory under {layout.runtimes} (see: opsctl runtime list)")
    candidate = Path(os.path.normpath(candidate.absolute()))
    if not _same(candidate.parent, layout.runtimes):
        raise RuntimeProblem(f"{candidate} is not under {layout.runtimes}: runtimes are built there by install.sh --upgrade")
    return candidate


def _relative_target(layout: Layout, runtime_dir: Path) -> str:
    return os.path.relpath(runtime_dir, layout.prefix)


def point(link: Path, target: str) -> None:
    """Repoint a symlink atomically: a fresh link under a temp name, then rename(2) over the old one."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(link.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Links:
    """What `current` and `previous` pointed at: taken before a switch, restored on failure."""

    current: Path | None
    previous: Path | None


def snapshot(layout: Layout) -> Links:
    return Links(current=link_target(layout.current), previous=link_target(layout.previous))


def restore(layout: Layout, links: Links) -> None:
    if links.current is not None:
        point(layout.current, _relative_target(layout, links.current))
    if links.previous is not None:
        point(layout.previous, _relative_target(layout, links.previous))
    else:
        layout.previous.unlink(missing_ok=True)


def activate(layout: Layout, runtime_dir: Path) -> Links:
    """Make runtime_dir `current` and the old current `previous`; returns the links before.

    `previous` moves first: if we die between the two renames, current is still the old runtime
    and previous names it too, which is harmless.
    """
    before = snapshot(layout)
    if before.current is not None and not _same(before.current, runtime_dir):
        point(layout.previous, _relative_target(layout, before.current))
    point(layout.current, _relative_target(layout, runtime_dir))
    return before


def swap(layout: Layout) -> Links:
    """current <-> previous (what a rollback does before its one restart)."""
    before = snapshot(layout)
    if before.previous is None:
        raise RuntimeProblem(f"nothing to roll back to: {layout.previous} is missing (no upgrade has run, or its runtime was removed)")
    if before.current is None:
        raise RuntimeProblem(f"{layout.current} is missing or dangling: run install.sh to repair the installation")
    point(layout.current, _relative_target(layout, before.previous))
    point(layout.previous, _relative_target(layout, before.current))
    return before


def prune(layout: Layout, keep: int = KEEP_RUNTIMES) -> list[Path]:
    """Remove runtimes beyond `keep` besides current; never current or previous. Returns what went."""
    import shutil

    current, previous = link_target(layout.current), link_target(layout.previous)
    protected = [p for p in (current, previous) if p is not None]
    others = [r for r in list_runtimes(layout) if not any(_same(r.path, p) for p in protected)]
    # `keep` counts runtimes besides current, previous included: 2 keeps current, previous, one more.
    has_previous = previous is not None and not _same(previous, current)
    room = max(keep - (1 if has_previous else 0), 0)
    removed = []
    for runtime in others[room:]:
        shutil.rmtree(runtime.path)
        removed.append(runtime.path)
    return removed
