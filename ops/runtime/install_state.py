"""What the service was last (re)started with, and what changed since: install.sh's change detection.

The record (INSTALL_STATE_FILE, root 0600) holds one `component sha256` line per thing the running
service depends on (`runtime` holds the current link's target instead). `opsctl install` compares
the host with it to decide whether to restart or reload, and records after each run
(ops/install/steps.py; by hand: `python -m ops.runtime.install_state`). opsctl records after each
restart or reload it makes itself (key rotate, runtime upgrade and rollback, ops/runtime/service.py),
so a plain install.sh afterwards finds nothing changed and restarts nothing.

A restart or a reload applies every file a launcher reads when it starts; the unit files need a
daemon-reload first, which only install.sh does, so opsctl leaves their lines as install.sh recorded them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from ops.from_launcher.layout import Layout

ABSENT = "absent"
FIRST_INSTALL = "first-install"
# What a restart alone does not apply (systemd reads unit files at daemon-reload).
UNIT_COMPONENTS = ("unit", "socket", "drop-ins")


def _file_digest(path: Path) -> str:
    if not path.is_file():
        return ABSENT
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _regular_files(directory: Path, rel: str = ".") -> list[str]:
    """`./`-relative paths of the regular files below directory (symlinks neither listed nor followed)."""
    found = []
    with os.scandir(directory / rel) as entries:
        for entry in entries:
            path = f"{rel}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                found += _regular_files(directory, path)
            elif entry.is_file(follow_symlinks=False):
                found.append(path)
    return found


def _tree_digest(directory: Path, keep) -> str:
    """sha256 of what `sha256sum` prints for the kept files in C-locale path order (the record's
    format on hosts installed so far: an unchanged tree must not read as a change)."""
    if not directory.is_dir():
        return ABSENT
    paths = sorted((p for p in _regular_files(directory) if keep(p)), key=lambda p: p.encode())
    listing = "".join(f"{_file_digest(directory / p)}  {p}\n" for p in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def fingerprint(layout: Layout) -> dict[str, str]:
    """component -> digest, in the record's order."""
    try:
        runtime = os.readlink(layout.current)
    except OSError:
        runtime = ABSENT
    return {
        "runtime": runtime,
        "launcher": _tree_digest(layout.current / "libexec", lambda p: "/__pycache__/" not in p),
        "unit": _file_digest(layout.unit_file),
        "socket": _file_digest(layout.socket_file),
        "drop-ins": _tree_digest(layout.dropin_dir, lambda p: p.endswith(".conf")),
        "env-file": _file_digest(layout.env_file),
        "key-file": _file_digest(layout.key_file),
        "upstream-key": _file_digest(layout.upstream_key_file),
        "provider-file": _file_digest(layout.provider_file),
    }


def recorded(layout: Layout) -> dict[str, str] | None:
    """The last record, or None when there is none (nothing installed yet, or removed to force a restart)."""
    try:
        text = layout.install_state.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    state = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    return state or None


def changes(before: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The components that differ from the record, in order; first-install without one."""
    if before is None:
        return [FIRST_INSTALL]
    return [name for name, digest in now.items() if before.get(name) != digest]


def record(layout: Layout, state: dict[str, str]) -> None:
    """Atomically, 0600; written only when it differs, so a run that changes nothing touches nothing."""
    if recorded(layout) == state:
        return
    path = layout.install_state
    tmp = path.with_name(f"{path.name}.install-tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(f"{name} {digest}\n" for name, digest in state.items()))
    os.replace(tmp, path)


def record_restart(layout: Layout) -> None:
    """After opsctl restarted or reloaded the service: what it started with is recorded, the unit files' lines
    kept. Without a record (install.sh never finished here) there is nothing to keep consistent."""
    before = recorded(layout)
    if before is None:
        return
    now = fingerprint(layout)
    now.update({name: before[name] for name in UNIT_COMPONENTS if name in before})
    record(layout, now)


USAGE = "usage: python -m ops.runtime.install_state changes [--record] ROOT"


def main(argv: list[str]) -> int:
    """The by-hand entry: prints the changed components (one a line) of the layout under ROOT ("/"
    for the host); --record also records the host's state. Exit 0, 1 on a file error, 2 on usage."""
    if argv[:1] != ["changes"] or len(argv) not in (2, 3) or (len(argv) == 3 and argv[1] != "--record"):
        print(USAGE, file=sys.stderr)
        return 2
    layout = Layout(Path(argv[-1]))
    try:
        now = fingerprint(layout)
        changed = changes(recorded(layout), now)
        if len(argv) == 3:
            record(layout, now)
    except (OSError, ValueError) as exc:
        print(f"ops.runtime.install_state: {getattr(exc, 'filename', None) or layout.install_state}: "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1
    if changed:
        print("\n".join(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
