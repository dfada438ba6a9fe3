"""The one documented test cache, and how a real part is built into it once.

$OPTILLM_PROXY_TEST_CACHE, else /var/cache/optillm-proxy-ops for root and
~/.cache/optillm-proxy-ops for anyone else. It holds the runtime venvs (runtimes/), the LiteLLM
venv (litellm/), the box's base rootfs per release (box-base-*), the fleet layer (box-fleet-*) and
its wheelhouse (fleet-wheels/), and the hashed pin of the next optillm release
(optillm-<version>-pin-py<X.Y>, tests/test_box_upgrade.py): each named by a hash of what it is built from, built once under a
lock (parallel sessions wait rather than build twice) and marked complete only when its build
returned, so a half-built part is never used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

COMPLETE = ".complete"


def cache_dir() -> Path:
    env = os.environ.get("OPTILLM_PROXY_TEST_CACHE")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/cache/optillm-proxy-ops")
    else:
        path = Path.home() / ".cache" / "optillm-proxy-ops"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(path: Path, build: Callable[[Path], None], *, lock: str, prune: Callable[[], None] = lambda: None,
               in_place: bool = False) -> tuple[Path, float]:
    """`path`, reused when complete, else built by build(target) under the lock file `lock` beside it:
    prune() first (older recipes' parts), then the build into `path.building`, renamed into place
    once it returned, or into `path` itself when `in_place` (uv writes a venv's absolute path into
    its scripts). A failed build leaves nothing behind. Returns (path, seconds spent building, 0.0
    when reused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / lock, "w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)
        if (path / COMPLETE).exists():
            return path, 0.0
        start = time.monotonic()
        prune()
        target = path if in_place else path.with_name(path.name + ".building")
        shutil.rmtree(target, ignore_errors=True)
        try:
            build(target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        if not in_place:
            shutil.rmtree(path, ignore_errors=True)
            target.rename(path)
        (path / COMPLETE).write_text(path.name + "\n")
        return path, time.monotonic() - start
