"""Derive locks/py3.11/lean.txt from locks/py3.11/full.txt by measurement, or check that it is up to date.

    uv run python tools/derive_lean_lock.py [--full-venv DIR]          # rewrite locks/py3.11/lean.txt
    uv run python tools/derive_lean_lock.py --check [--full-venv DIR]  # exit 1 if it is stale

tools/derive_locks.py runs this for Python 3.11 and re-pins the measured set for the other Pythons.

The lean set is:
  1. every distribution that owns a module core optillm imported while serving every core
     approach for real (tools/lean_probe.py, run inside a venv built from locks/py3.11/full.txt), and
     the launcher's own requirements (launcher/requirements.in, which locks/full.in includes), plus
  2. the closure of their declared requirements (Requires-Dist, markers evaluated for the
     runtime's interpreter, extras followed), EXCEPT optillm's own requirement list: it declares
     everything its plugins and local inference need (torch, transformers, spacy, ...), which
     is exactly what the lean profile leaves out. optillm itself is in the set (it is imported).
lean.txt holds the full lock's entries for that set, verbatim (same pins, hashes, comments), in
the full lock's order. Because it omits part of optillm's declared requirements, it must be
installed with `uv pip sync --require-hashes` (installs exactly the listed set, no resolution).

Without --full-venv a temporary venv is built from locks/py3.11/full.txt with uv (uses uv's cache).

Exit codes: 0 written / up to date, 1 --check found lean.txt stale, 2 bad input (missing lock,
venv not built from the full lock, uv missing), 3 the measurement failed (an approach did not
answer 200, or the probe crashed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
FULL_LOCK = REPO / "locks" / "py3.11" / "full.txt"
LEAN_LOCK = REPO / "locks" / "py3.11" / "lean.txt"
PROBE = REPO / "tools" / "lean_probe.py"
LAUNCHER_REQUIREMENTS = REPO / "launcher" / "requirements.in"
FAKE_UPSTREAM = REPO / "tools" / "fake_upstream.py"
OPTILLM = "optillm"

EXIT_STALE = 1
EXIT_BAD_INPUT = 2
EXIT_MEASUREMENT_FAILED = 3

# No hand-made exclusions or additions: the measured set plus its closure served every core
# approach (tests/test_lean_profile.py proves it). Add a name here only if a measurement forces
# it, with the measurement in a comment.
DENYLIST: dict[str, str] = {}

_ENTRY_START = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


class DerivationError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class LockEntry:
    name: str
    version: str
    text: str  # the entry's lines, verbatim, from "name==version \" to before the next entry


def parse_lock(path: Path) -> list[LockEntry]:
    return parse_lock_text(path.read_text())


def parse_lock_text(text: str) -> list[LockEntry]:
    entries: list[LockEntry] = []
    for line in text.splitlines(keepends=True):
        match = _ENTRY_START.match(line)
        if match:
            entries.append(LockEntry(canonical(match.group(1)), match.group(3), line))
        elif entries:
            entries[-1].text += line
    return entries


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_full_venv(workdir: Path) -> Path:
    uv = shutil.which("uv")
    if not uv:
        raise DerivationError("uv is not on PATH: install it (scripts/test.sh does) or pass --full-venv DIR",
                              EXIT_BAD_INPUT)
    venv = workdir / "full-venv"
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    env = dict(os.environ, VIRTUAL_ENV=str(venv))
    for cmd in ([uv, "venv", "-q", "--python", python, str(venv)],
                [uv, "pip", "sync", "-q", "--require-hashes", str(FULL_LOCK)]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DerivationError(f"building a venv from {FULL_LOCK} failed: {proc.stderr.strip()[-500:]}",
                                  EXIT_BAD_INPUT)
    return venv


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise DerivationError(f"{venv} is not a venv (no lib/python3*/site-packages): pass a venv "
                              f"built from {FULL_LOCK}", EXIT_BAD_INPUT)
    return found[0]


def installed(venv: Path) -> dict[str, importlib.metadata.Distribution]:
    return {canonical(d.metadata["Name"]): d
            for d in importlib.metadata.distributions(path=[str(site_packages(venv))])}


def require_venv_matches_lock(dists: dict, lock: list[LockEntry], venv: Path) -> None:
    pinned = {e.name: e.version for e in lock}
    have = {name: d.version for name, d in dists.items()}
    if have != pinned:
        differ = sorted(set(have.items()) ^ set(pinned.items()))[:5]
        raise DerivationError(f"{venv} was not built from {FULL_LOCK} (differs in e.g. {differ}): "
                              "rebuild it with `uv pip sync --require-hashes locks/py3.11/full.txt` or omit "
                              "--full-venv", EXIT_BAD_INPUT)


def run_probe(venv: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="lean-probe-") as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
               "OPENAI_API_KEY": "lean-probe-upstream-key"}
        proc = subprocess.run([str(venv / "bin" / "python"), "-I", str(PROBE), str(FAKE_UPSTREAM)],
                              cwd=home, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DerivationError(f"the probe failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}",
                              EXIT_MEASUREMENT_FAILED)
    report = json.loads(proc.stdout)
    failed = {a: r["status"] for a, r in report["approaches"].items() if r["status"] != 200}
    if failed:
        raise DerivationError(f"core approaches did not answer 200 in the full venv: {failed}",
                              EXIT_MEASUREMENT_FAILED)
    return report


def launcher_requirements(path: Path = LAUNCHER_REQUIREMENTS) -> list[str]:
    """Names in launcher/requirements.in (comments and blank lines skipped)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(canonical(Requirement(line).name))
    return names


def requirement_closure(seeds: list[str], dists: dict, environment: dict,
                        reasons: dict[str, str] | None = None) -> dict[str, str]:
    """Each needed distribution -> why (imported, or `required by X`). optillm is not expanded."""
    why = {name: (reasons or {}).get(name, "imported") for name in seeds}
    extras_of: dict[str, set[str]] = {name: set() for name in seeds}
    queue = list(seeds)
    while queue:
        name = queue.pop()
        if name == OPTILLM:
            continue
        if name not in dists:
            raise DerivationError(f"{name} is required but not installed in the full venv: "
                                  "locks/py3.11/full.txt is inconsistent, regenerate it", EXIT_BAD_INPUT)
        wanted_extras = extras_of[name] | {""}
        for line in dists[name].requires or ():
            req = Requirement(line)
            if req.marker and not any(_marker_true(req.marker, environment, e) for e in wanted_extras):
                continue
            child = canonical(req.name)
            if child in DENYLIST:
                continue
            new_extras = set(req.extras) - extras_of.get(child, set())
            if child not in why or new_extras:
                why.setdefault(child, f"required by {name}")
                extras_of.setdefault(child, set()).update(req.extras)
                queue.append(child)
    return why


def _marker_true(marker: Marker, environment: dict, extra: str) -> bool:
    return marker.evaluate({**environment, "extra": extra})


def render(lock: list[LockEntry], members: set[str]) -> str:
    header = (
        '# Runtime profile "lean", for a host whose python3 is 3.11: every core optillm approach, without\n'
        "# what only plugins and local inference import (no torch, transformers, spacy). DERIVED, do not\n"
        f"# edit: generated from locks/py3.11/full.txt (sha256 {sha256(FULL_LOCK)}) by measurement:\n"
        "#    uv run python tools/derive_locks.py            (every lock; runs this measurement)\n"
        "#    uv run python tools/derive_lean_lock.py --check    (this one; exit 1 if stale)\n"
        "# Entries are copied verbatim from locks/py3.11/full.txt (same pins, hashes, '# via' notes).\n"
        "# Install ONLY with `uv pip sync --require-hashes`: the set omits optillm's plugin-only\n"
        "# requirements on purpose and must not be resolved again.\n"
        "# Target: CPython 3.11\n"
    )
    return header + "".join(e.text for e in lock if e.name in members)


def derive(full_venv: Path | None) -> tuple[str, dict, dict]:
    if not FULL_LOCK.exists():
        raise DerivationError(f"{FULL_LOCK} is missing", EXIT_BAD_INPUT)
    lock = parse_lock(FULL_LOCK)
    with tempfile.TemporaryDirectory(prefix="lean-derive-") as work:
        venv = full_venv or build_full_venv(Path(work))
        dists = installed(venv)
        require_venv_matches_lock(dists, lock, venv)
        report = run_probe(venv)
        launcher = launcher_requirements()
        seeds = sorted(set(report["distributions"]) | set(launcher))
        why = requirement_closure(seeds, dists, report["marker_environment"],
                                  {name: "required by the launcher" for name in launcher})
    members = set(why) - set(DENYLIST)
    return render(lock, members), why, report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if locks/py3.11/lean.txt is stale")
    parser.add_argument("--full-venv", type=Path, help="a venv built from locks/py3.11/full.txt (else one is built)")
    parser.add_argument("--lean-lock", type=Path, default=LEAN_LOCK, help="the lean lock to write or check")
    parser.add_argument("--explain", action="store_true", help="print why each package is in the lean set")
    parser.add_argument("--report", type=Path, help="also write the probe's measurements (JSON) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        text, why, report = derive(args.full_venv)
    except DerivationError as exc:
        print(f"derive_lean_lock: {exc}", file=sys.stderr)
        return exc.code
    if args.report:
        args.report.write_text(json.dumps({**report, "lean": why}, indent=1, sort_keys=True) + "\n")
    if args.explain:
        for name in sorted(why):
            print(f"{name}: {why[name]}")
    count = len(parse_lock_text(text))
    if args.check:
        current = args.lean_lock.read_text() if args.lean_lock.exists() else ""
        if current != text:
            old = {e.name for e in parse_lock_text(current)}
            new = {e.name for e in parse_lock_text(text)}
            print(f"derive_lean_lock: {args.lean_lock} is stale (would add {sorted(new - old)}, "
                  f"remove {sorted(old - new)}); regenerate: uv run python tools/derive_locks.py",
                  file=sys.stderr)
            return EXIT_STALE
        print(f"{args.lean_lock} is up to date ({count} packages)")
        return 0
    args.lean_lock.write_text(text)
    print(f"wrote {args.lean_lock} ({count} packages of {len(parse_lock(FULL_LOCK))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
