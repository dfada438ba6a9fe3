"""The runtime's installed packages do not match its lock.

Why: the runtime is the lock (hashed, resolved for 0.3.12: numpy<2, math-verify, ...).
A package upgraded or removed by hand (`pip install -U ...` in the venv) brings back the
failures measured on unpinned installs: plugins failing with numpy 2, optillm not starting
without math_verify. A lock file edited after install no longer describes the runtime.

Fails:
    lock: numpy==1.26.4     installed: numpy 2.2.1
    manifest lock_file: libexec/lean.txt    (file missing)
    lock "# Target: CPython 3.11"    runtime: lib/python3.13 (a lock for another Python)

Passes:
    every locked package installed at its locked version; the lock's sha256 matches the
    manifest's lock_sha256.

Fix: rebuild the runtime with `sudo ./install.sh` (never pip-install into it by hand).
"""

import hashlib
import re

from ops.lint.finding import ERROR, Problem
from ops.lint.readers.runtime import parse_lock
from ops.lint.readers.text import Unreadable, read_text

ID = "lock-unsatisfied"
TARGET = re.compile(r"^# Target: CPython (\d+\.\d+)\s*$", re.MULTILINE)
SEVERITY = ERROR
MAX_LISTED = 20


def lock_target(text: str) -> str | None:
    """The Python a lock was resolved for (tools/derive_locks.py writes `# Target: CPython X.Y`)."""
    match = TARGET.search(text)
    return match.group(1) if match else None


def check(ctx):
    rt = ctx.runtime
    if rt is None or rt.manifest is None:
        return  # file-missing / file-unreadable already said why
    manifest = str(rt.manifest_path)
    rel = rt.manifest.get("lock_file")
    if not isinstance(rel, str) or not rel:
        yield Problem(manifest, 1, "manifest names no lock_file; rebuild the runtime")
        return
    lock_path = (rt.path / rel)
    try:
        text = read_text(lock_path)
    except Unreadable as exc:
        yield Problem(str(lock_path), 0, f"lock named by the manifest: {exc}; rebuild the runtime")
        return
    want_sha = rt.manifest.get("lock_sha256")
    got_sha = hashlib.sha256(text.encode()).hexdigest()
    if isinstance(want_sha, str) and want_sha and want_sha != got_sha:
        yield Problem(str(lock_path), 0, f"lock sha256 {got_sha[:12]} differs from the manifest's "
                                         f"{want_sha[:12]}: the lock changed after install; "
                                         "rebuild the runtime")
    target = lock_target(text)
    if target and rt.python and target != rt.python:
        yield Problem(str(lock_path), 0, f"the lock targets Python {target}, the runtime runs {rt.python} "
                                         f"(lock built from {rt.manifest.get('lock_source', '?')}): rebuild the "
                                         f"runtime with `sudo ./install.sh --upgrade`, which picks "
                                         f"locks/py{rt.python}/")
    lock = parse_lock(text)
    for line, message in lock.problems:
        yield Problem(str(lock_path), line, message)
    bad = []
    for entry in lock.entries:
        try:
            applies = entry.requirement.marker is None or entry.requirement.marker.evaluate()
        except Exception:  # noqa: BLE001 - an odd marker is not the operator's problem here
            applies = True
        if not applies:
            continue
        dist = rt.dists.get(entry.name)
        if dist is None:
            bad.append((entry.line, f"{entry.name} {entry.version or ''} is locked but not "
                                    "installed"))
        elif entry.version is not None and dist.version != entry.version:
            bad.append((entry.line, f"{entry.name} {dist.version} installed, lock pins "
                                    f"{entry.version}"))
    for line, message in bad[:MAX_LISTED]:
        yield Problem(str(lock_path), line, f"{message}; rebuild the runtime with install.sh")
    if len(bad) > MAX_LISTED:
        yield Problem(str(lock_path), 0, f"... and {len(bad) - MAX_LISTED} more packages differ "
                                         "from the lock; rebuild the runtime")
