"""What the host (or a --root staging) holds: read-only predicates the steps compare with what
they want. Staged under --root only modes are compared (the invoker owns the files)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path

from ops.from_launcher.layout import MANIFEST_REL, Layout


def mode_owner(path: Path, staged: bool) -> tuple:
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if staged:
        return (mode,)
    return (mode, _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid))


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def wanted(mode: int, owner: str, staged: bool) -> tuple:
    return (mode,) if staged else (mode, owner, owner)


def file_differs(content: bytes, dest: Path, mode: int, staged: bool) -> bool:
    """DEST is not a regular file with CONTENT, MODE and (for real) root's ownership."""
    if dest.is_symlink() or not dest.is_file():
        return True
    return dest.read_bytes() != content or mode_owner(dest, staged) != wanted(mode, "root", staged)


def dir_differs(path: Path, mode: int, owner: str, staged: bool) -> bool:
    if path.is_symlink() or not path.is_dir():
        return True
    return mode_owner(path, staged) != wanted(mode, owner, staged)


def link_differs(target: str, link: Path) -> bool:
    return not (link.is_symlink() and os.readlink(link) == target)


def recorded_profile(layout: Layout) -> str:
    """The profile the current runtime's manifest records ("" if unreadable)."""
    try:
        return str(json.loads(layout.runtime_manifest().read_text(encoding="utf-8")).get("profile") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def runtime_is_complete(runtime: Path, lock_sha: str) -> bool:
    try:
        return json.loads((runtime / MANIFEST_REL).read_text(encoding="utf-8")).get("lock_sha256") == lock_sha
    except (OSError, ValueError, AttributeError):
        return False


def site_packages_rel(runtime: Path) -> str | None:
    """lib/python3.X/site-packages inside the runtime, if there is one."""
    found = sorted(runtime.glob("lib/python3.*/site-packages"))
    return str(found[0].relative_to(runtime)) if found else None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def is_secret_mode(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600
