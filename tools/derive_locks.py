"""Derive every runtime lock (one directory per host Python), or check that they are up to date.

    uv run python tools/derive_locks.py            # rewrite locks/py3.*/{full,lean}.txt
    uv run python tools/derive_locks.py --check    # exit 1 if any lock is stale
    (both resolve with uv: they need the package index, or uv's cache holding its answers)

Layout: locks/py<X.Y>/<profile>.txt, one directory per supported host Python (install.sh picks
the directory from /usr/bin/python3's version). Where a profile cannot be built for a Python,
locks/py<X.Y>/<profile>.unavailable holds the one-line reason instead, which install.sh prints
and launcher/plugins.json's "pythons" section repeats for the launcher and lint.

For each Python:
  full  `uv pip compile locks/full.in` for that Python on Debian 12's glibc, wheels only (the box
        has no compiler), hashes, the fixed --exclude-newer cutoff. If that does not resolve, the
        profile is unavailable there and UNAVAILABLE says why (the resolution must fail: a reason
        that no longer holds is an error).
  lean  3.11: measured by tools/derive_lean_lock.py (core approaches served for real in a venv
        of the 3.11 full lock). Other Pythons, where full resolves: that measured set taken
        verbatim from the Python's full lock, plus what its members require there (the `# via`
        notes; optillm's own list is not followed, as in the measurement). Where full does not
        resolve: the measured set resolved on its own (full.in plus the measured names, every
        package the 3.11 full lock has beyond the lean set dropped, and that Python's OVERRIDES).

Every generated file records the sha256 of its inputs, so tests/test_locks.py can tell a stale
lock without the network; --check re-resolves and compares byte for byte.

Exit codes: 0 written / up to date, 1 --check found a stale lock, 2 bad input (uv missing, an
unexpected resolution failure, a reason in UNAVAILABLE that no longer holds), 3 the 3.11
measurement failed (see tools/derive_lean_lock.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optillm_proxy_launcher.layout import OPTILLM_VERSION  # noqa: E402
from tools import derive_lean_lock as measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "locks"
FULL_IN = LOCKS / "full.in"
LAUNCHER_REQUIREMENTS = REPO / "launcher" / "requirements.in"
PLUGIN_TABLE = REPO / "launcher" / "plugins.json"
THIS = Path(__file__).resolve()

# Host Pythons with locks: Debian 12 (3.11), Ubuntu 24.04 (3.12), Debian 13 (3.13).
PYTHONS = ("3.11", "3.12", "3.13")
MEASURED_PYTHON = "3.11"
PROFILES = ("lean", "full")
# The day after optillm 0.3.12 was published: move it only on purpose.
EXCLUDE_NEWER = "2025-12-26"
# Debian 12's glibc (2.36); Debian 13's is newer. cysystemd ships manylinux_2_34 wheels only.
PLATFORM = "x86_64-manylinux_2_36"

# Profiles that cannot be built for a Python, and why (the resolution is checked to fail).
UNAVAILABLE = {
    ("3.13", "full"): f"optillm {OPTILLM_VERSION} requires spacy<3.8 (the privacy plugin, through presidio) and spacy 3.7 "
                      "has no wheel for Python 3.13 (building it needs a compiler): use a Python 3.11 or 3.12 "
                      "host (Debian 12) for the full profile",
}
# Where full is unavailable, the lean set's own resolution also needs: (numpy<2 in full.in is for
# spacy 3.7, which lean leaves out; numpy 1.x has no wheel for 3.13.)
OVERRIDES = {
    "3.13": ("numpy>=2",),
}

EXIT_STALE = 1
EXIT_BAD_INPUT = 2


class LockError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def lock_path(python: str, profile: str) -> Path:
    return LOCKS / f"py{python}" / f"{profile}.txt"


def unavailable_path(python: str, profile: str) -> Path:
    return LOCKS / f"py{python}" / f"{profile}.unavailable"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def inputs_digest(python: str, profile: str, measured_lean: str | None = None) -> str:
    """sha256 over everything a lock is derived from (the tool's own settings included)."""
    parts = [FULL_IN.read_text(), LAUNCHER_REQUIREMENTS.read_text(), python, profile, EXCLUDE_NEWER,
             PLATFORM, json.dumps(OVERRIDES.get(python, ())), UNAVAILABLE.get((python, profile), "")]
    if profile == "lean" and python != MEASURED_PYTHON:  # the measured names (not their 3.11 pins)
        text = measured_lean if measured_lean is not None else lock_path(MEASURED_PYTHON, "lean").read_text()
        parts.append(",".join(sorted(e.name for e in measured.parse_lock_text(text))))
    return sha256_text("\x00".join(parts))


def inputs_line(digest: str) -> str:
    return f"# inputs sha256 {digest}\n"


def recorded_digest(text: str) -> str | None:
    for line in text.splitlines()[:20]:
        if line.startswith("# inputs sha256 "):
            return line.split()[-1]
    return None


def uv_bin() -> str:
    uv = shutil.which("uv")
    if not uv:
        raise LockError("uv is not on PATH: export PATH=/var/cache/optillm-proxy-ops/tools/bin:$PATH "
                        "(scripts/test.sh installs it there)")
    return uv


def compile_full(python: str, overrides: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(resolved, lock body or uv's error) for locks/full.in (plus `extra` requirements) on `python`."""
    with tempfile.TemporaryDirectory(prefix="derive-locks-") as work:
        inputs = ["locks/full.in"]
        if extra:  # a file in a temporary directory: its path must not reach the notes
            names = Path(work) / "names.in"
            names.write_text("\n".join(extra) + "\n")
            inputs += [str(names), "--no-annotate"]
        cmd = [uv_bin(), "pip", "compile", *inputs, "--generate-hashes", "--no-header", "-q",
               "--exclude-newer", EXCLUDE_NEWER, "--python-version", python, "--python-platform", PLATFORM,
               "--only-binary", ":all:", "--no-config"]
        if overrides:
            override_file = Path(work) / "overrides.txt"
            override_file.write_text("\n".join(overrides) + "\n")
            cmd += ["--overrides", str(override_file)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return False, proc.stderr.strip()
    return True, proc.stdout


def full_header(python: str, digest: str) -> str:
    return (
        f'# Service runtime, profile "full", for a host whose python3 is {python}: stock optillm {OPTILLM_VERSION} with\n'
        "# every bundled plugin loadable. DERIVED, do not edit: regenerate every lock with\n"
        "#    uv run python tools/derive_locks.py            (rewrite)\n"
        "#    uv run python tools/derive_locks.py --check    (exit 1 if stale)\n"
        f"# uv pip compile locks/full.in --generate-hashes --exclude-newer {EXCLUDE_NEWER} --python-version {python}\n"
        f"#   --python-platform {PLATFORM} --only-binary :all:   (wheels only: no compiler on the host)\n"
        f"# Target: CPython {python}\n"
        + inputs_line(digest)
    )


def lean_header(python: str, source: str, digest: str, missing: list[str]) -> str:
    absent = ("# Measured on 3.11 but required by nothing here (imported there only if present): "
              f"{', '.join(missing)}\n") if missing else ""
    return (
        f'# Runtime profile "lean", for a host whose python3 is {python}: every core optillm approach,\n'
        "# without what only plugins and local inference import (no torch, transformers, spacy).\n"
        "# DERIVED, do not edit: the lean set measured on Python 3.11 (locks/py3.11/lean.txt), pinned\n"
        f"# for {python} from {source},\n"
        "# plus what its members require there. Regenerate every lock with\n"
        "#    uv run python tools/derive_locks.py            (rewrite)\n"
        "#    uv run python tools/derive_locks.py --check    (exit 1 if stale)\n"
        "# Install ONLY with `uv pip sync --require-hashes`: the set omits optillm's plugin-only\n"
        "# requirements on purpose and must not be resolved again.\n"
        + absent
        + f"# Target: CPython {python}\n"
        + inputs_line(digest)
    )


def via_parents(entry: measured.LockEntry) -> set[str]:
    """The packages that require `entry` in its resolution (its `# via` notes; -r files excluded)."""
    parents, in_via = set(), False
    for line in entry.text.splitlines()[1:]:
        text = line.strip()
        if not text.startswith("#"):
            continue
        note = text.lstrip("#").strip()
        if note.startswith("via"):
            in_via = True
            note = note[3:].strip()
        if in_via and note and not note.startswith("-r"):
            parents.add(measured.canonical(note.split()[0]))
    return parents


def lean_members(resolution: list[measured.LockEntry], measured_names: set[str]) -> set[str]:
    """The measured names present in `resolution`, closed over what they require there."""
    present = {e.name for e in resolution}
    members = measured_names & present
    parents = {e.name: via_parents(e) for e in resolution}
    grew = True
    while grew:
        grew = False
        for name in present - members:
            if any(p in members and p != measured.OPTILLM for p in parents[name]):
                members.add(name)
                grew = True
    return members


def derive_all(full_venv: Path | None, measure: bool = True) -> dict[Path, str]:
    """Every file under locks/py*/ that the inputs give, path -> content."""
    out: dict[Path, str] = {}
    resolutions: dict[str, str] = {}
    for python in PYTHONS:
        reason = UNAVAILABLE.get((python, "full"))
        ok, body = compile_full(python)
        if reason:
            if ok:
                raise LockError(f"full now resolves for Python {python}: remove its UNAVAILABLE reason in "
                                f"{THIS.name} and regenerate")
            out[unavailable_path(python, "full")] = reason + "\n"
        elif not ok:
            raise LockError(f"locks/full.in does not resolve for Python {python} with wheels only:\n{body[-1500:]}\n"
                            f"if that is expected, add the reason to UNAVAILABLE in {THIS.name}")
        else:
            out[lock_path(python, "full")] = full_header(python, inputs_digest(python, "full")) + body
            resolutions[python] = body
    # The measured lean (3.11) comes from the 3.11 full lock just derived.
    full_311 = out[lock_path(MEASURED_PYTHON, "full")]
    if measure:
        measured_lean = measure_lean(full_311, full_venv)
    else:
        measured_lean = lock_path(MEASURED_PYTHON, "lean").read_text()
    out[lock_path(MEASURED_PYTHON, "lean")] = measured_lean
    names = {e.name for e in measured.parse_lock_text(measured_lean)}
    plugin_only = {e.name for e in measured.parse_lock_text(full_311)} - names
    for python in PYTHONS:
        if python == MEASURED_PYTHON:
            continue
        digest = inputs_digest(python, "lean", measured_lean)
        if python in resolutions:
            resolution = measured.parse_lock_text(resolutions[python])
            members = lean_members(resolution, names)
            entries = [e for e in resolution if e.name in members]
            source = f"locks/py{python}/full.txt (verbatim entries)"
        else:
            drops = tuple(f"{name}; sys_platform == 'never'" for name in sorted(plugin_only))
            ok, body = compile_full(python, drops + OVERRIDES.get(python, ()), tuple(sorted(names - {"optillm"})))
            if not ok:
                raise LockError(f"the lean set does not resolve for Python {python} with wheels only:\n{body[-1500:]}")
            entries = measured.parse_lock_text(body)
            source = (f"its own resolution (full.in and the measured names, plugin-only packages dropped, "
                      f"overrides: {', '.join(OVERRIDES.get(python, ())) or 'none'})")
        missing = sorted(names - {e.name for e in entries})
        header = lean_header(python, source, digest, missing)
        out[lock_path(python, "lean")] = header + "".join(e.text for e in entries)
    return out


def measure_lean(full_lock_text: str, full_venv: Path | None) -> str:
    """tools/derive_lean_lock.py's measured lean lock for `full_lock_text` (3.11)."""
    path = lock_path(MEASURED_PYTHON, "full")
    if not path.exists() or path.read_text() != full_lock_text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(full_lock_text)  # the measurement reads the full lock from disk
    try:
        text, _why, _report = measured.derive(full_venv)
    except measured.DerivationError as exc:
        raise LockError(f"measuring the 3.11 lean set: {exc}", exc.code) from exc
    return text


def pythons_table(files: dict[Path, str]) -> dict:
    """launcher/plugins.json's "pythons" section: profiles per Python, and why one is missing."""
    table = {}
    for python in PYTHONS:
        entry: dict = {"profiles": [p for p in PROFILES if lock_path(python, p) in files]}
        for profile in PROFILES:
            reason = files.get(unavailable_path(python, profile))
            if reason:
                entry[f"{profile}_unavailable"] = reason.strip()
        table[python] = entry
    return table


def plugin_table_text(files: dict[Path, str]) -> str:
    table = json.loads(PLUGIN_TABLE.read_text())
    table["pythons"] = pythons_table(files)
    return json.dumps(table, indent=2) + "\n"


def existing_files() -> dict[Path, str]:
    found = {}
    for directory in sorted(LOCKS.glob("py*")):
        for path in sorted(directory.iterdir()):
            if path.suffix in (".txt", ".unavailable"):
                found[path] = path.read_text()
    return found


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any lock is stale")
    parser.add_argument("--full-venv", type=Path,
                        help="a venv built from locks/py3.11/full.txt for the 3.11 measurement (else one is built)")
    parser.add_argument("--no-measure", action="store_true",
                        help="take the measured 3.11 lean lock as it is (tools/derive_lean_lock.py checks it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    before = existing_files()
    try:
        files = derive_all(args.full_venv, measure=not args.no_measure)
    except LockError as exc:
        print(f"derive_locks: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if args.check:  # measure_lean may have written the 3.11 full lock: put it back
            for path, text in before.items():
                if path.read_text() != text:
                    path.write_text(text)
    table_text = plugin_table_text(files)
    if args.check:
        stale = sorted(str(p.relative_to(REPO)) for p in set(files) | set(before) if files.get(p) != before.get(p))
        if PLUGIN_TABLE.read_text() != table_text:
            stale.append(f"{PLUGIN_TABLE.relative_to(REPO)} (pythons)")
        if stale:
            print(f"derive_locks: stale: {', '.join(stale)}; regenerate: uv run python tools/derive_locks.py",
                  file=sys.stderr)
            return EXIT_STALE
        print(f"locks up to date ({len(files)} files for Python {', '.join(PYTHONS)})")
        return 0
    for path in set(before) - set(files):
        path.unlink()
    for path, text in sorted(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    PLUGIN_TABLE.write_text(table_text)
    print(f"wrote {len(files)} files under locks/py*/ and the pythons section of {PLUGIN_TABLE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
