"""An installed runtime, read from disk without running its python.

What is installed comes from `*.dist-info/METADATA` (Name, Version) in site-packages; what
should be installed comes from the hashed lock the runtime manifest names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ops.from_launcher import manifest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ops.lint.readers.text import Unreadable, read_text


@dataclass(frozen=True)
class Dist:
    name: str  # canonical
    version: str
    metadata: str  # path of METADATA


def site_packages(venv: Path) -> list[Path]:
    return sorted(p for p in venv.glob("lib/python*/site-packages") if p.is_dir())


def parse_metadata(text: str) -> tuple[str | None, str | None]:
    """Name and Version from a METADATA header (the part before the first blank line)."""
    name = version = None
    for line in text.split("\n"):
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "Name" and name is None:
            name = value.strip()
        elif key == "Version" and version is None:
            version = value.strip()
    return name, version


def installed_dists(venv: Path) -> tuple[dict[str, Dist], list[tuple[str, str]]]:
    """canonical name -> Dist, plus (path, problem) for dist-info dirs that cannot be read."""
    dists: dict[str, Dist] = {}
    problems: list[tuple[str, str]] = []
    for sp in site_packages(venv):
        for info in sorted(sp.glob("*.dist-info")):
            meta = info / "METADATA"
            try:
                name, version = parse_metadata(read_text(meta))
            except Unreadable as exc:
                problems.append((str(meta), str(exc)))
                continue
            if not name or not version:
                problems.append((str(meta), "no Name/Version header"))
                continue
            dists[canonicalize_name(name)] = Dist(canonicalize_name(name), version, str(meta))
    return dists, problems


@dataclass
class LockEntry:
    name: str  # canonical
    version: str | None  # the pinned version (== or ===), None if not pinned
    line: int
    requirement: Requirement


@dataclass
class Lock:
    entries: list[LockEntry] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def parse_lock(text: str) -> Lock:
    """A pip-style requirements lock (`uv pip compile --generate-hashes` output)."""
    lock = Lock()
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.split("\n"), start=1):
        if not buf:
            start = n
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        line = line.strip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append((start, buf.strip()))
        buf = ""
    if buf.strip():
        logical.append((start, buf.strip()))
    for n, line in logical:
        if line.startswith("-"):
            continue  # options such as --index-url or a lone --hash
        spec = " ".join(w for w in line.split() if not w.startswith("--hash"))
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            lock.problems.append((n, f"not a requirement: {str(exc).splitlines()[0]}"))
            continue
        pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
        lock.entries.append(LockEntry(canonicalize_name(req.name), pins[0] if pins else None, n, req))
    return lock


def read_manifest(path: Path) -> dict:
    """optillm-proxy-runtime.json through the one reader (optillm_proxy_launcher.manifest);
    raises Unreadable with the reason."""
    try:
        return manifest.read(path)
    except manifest.ManifestProblem as exc:
        raise Unreadable(str(exc)) from None
