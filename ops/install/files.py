"""Writing the install's files, links and directories: atomic (a temporary name, then a rename),
root-owned when installing for real, under --root when staging; what the steps (ops.install.steps,
ops.install.runtime) write with, mostly inside their `Run.apply`."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

from ops.install import host
from ops.install.run import Run, sh


def staged_path(run: Run, path: str) -> Path:
    """A deployed path, under --root when given."""
    return Path(run.root + path) if run.root else Path(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def put_file(run: Run, content: bytes, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.install-tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.chmod(tmp, mode)
    if not run.root:
        os.chown(tmp, 0, 0)
    os.replace(tmp, dest)


def sync_file(run: Run, content: bytes, deployed: str, mode: int, shown: str) -> None:
    dest = staged_path(run, deployed)
    if host.file_differs(content, dest, mode, bool(run.root)):
        run.apply(f"install {shown}", f"installed {shown}", lambda: put_file(run, content, dest, mode))
    else:
        run.report(f"{shown} unchanged")


def make_link(run: Run, target: str, link: Path) -> None:
    """LINK -> TARGET by atomic rename (relative targets keep a --root staging self-contained)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f"{link.name}.install-tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    if run.real:
        os.lchown(tmp, 0, 0)
    os.replace(tmp, link)


def build_dir(run: Run, dest: Path, builder: Callable[[Path], None]) -> None:
    """Built under a temporary name, then renamed: a half-built runtime is never what a path names."""
    tmp = dest.parent / f".{dest.name}.partial"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    builder(tmp)
    sh("chmod", "-R", "go-w", tmp)
    if run.real:
        sh("chown", "-R", "root:root", tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def tighten_mode(run: Run, path: Path, shown: str) -> None:
    """Secrets are never group/world readable: an operator's file keeps its content, not a loose mode."""
    if not host.is_secret_mode(path):
        run.apply(f"set the mode of {shown} to 0600", f"mode of {shown} set to 0600", lambda: os.chmod(path, 0o600))


