"""Running the repo's real install.sh inside the box, from the read-only bind of the repo."""

from __future__ import annotations

import shlex
import time

from tests.box.errors import BoxError
from tests.box.machine import BOX_REPO, INSTALL_ENV, Box

# The upstream key optillm presents to LiteLLM (the recording upstream accepts any). Given to
# install.sh on stdin-free channels only: it is written into the box's env file, never argv.
UPSTREAM_KEY = "box-upstream-key-not-secret"


def install(box: Box, *args: str, timeout: float = 1500.0) -> float:
    """`install.sh ARGS` as root in the box; seconds taken. Raises BoxError with its output on failure."""
    start = time.monotonic()
    cmd = f"cd {BOX_REPO} && bash ./install.sh {shlex.join(args)}".rstrip()
    result = box.run(cmd, env=INSTALL_ENV, timeout=timeout)
    took = time.monotonic() - start
    if not result.ok:
        raise BoxError(f"{' '.join(['install.sh', *args])} failed in the box (exit {result.rc}) after {took:.0f}s:\n"
                       f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    box.last_install_output = result.stdout + result.stderr
    return took
