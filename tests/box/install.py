"""Running the repo's real install.sh inside the box, from the read-only bind of the repo."""

from __future__ import annotations

import shlex
import time

from ops.from_launcher.layout import DEFAULT as LAYOUT
from tests.box.errors import BoxError
from tests.box.machine import BOX_REPO, INSTALL_ENV, Box

ENV_FILE_TEXT = """\
# Written by the box fixture before install.sh, as an operator would: install.sh keeps it.
OPENAI_API_KEY={key}
PROXY_PLUGINS=none
"""


def seed_env_file(box: Box, upstream_key: str) -> None:
    """/etc/optillm-proxy/env with the key optillm presents to LiteLLM (root 0600), before install.sh.

    Written through the box's root directory on the host: the key never passes a command line.
    """
    conf = box.root / str(LAYOUT.conf_dir).lstrip("/")
    conf.mkdir(mode=0o755, parents=True, exist_ok=True)
    env_file = box.root / str(LAYOUT.env_file).lstrip("/")
    env_file.touch(mode=0o600)
    env_file.chmod(0o600)
    env_file.write_text(ENV_FILE_TEXT.format(key=upstream_key))


def seed_upstream_key(box: Box, upstream_key: str) -> None:
    """/etc/optillm-proxy/upstream-key (root 0600) before install.sh: the way a new install is set up
    (seed_env_file is the way an install from before the key was a credential looked)."""
    conf = box.root / str(LAYOUT.conf_dir).lstrip("/")
    conf.mkdir(mode=0o755, parents=True, exist_ok=True)
    key_file = box.root / str(LAYOUT.upstream_key_file).lstrip("/")
    key_file.touch(mode=0o600)
    key_file.chmod(0o600)
    key_file.write_text(upstream_key + "\n")


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


NO_CHANGE_LINE = "changed:   nothing (no change; nothing restarted)"


def assert_rerun_changes_nothing(box: Box, after: str) -> None:
    """A plain install.sh after an opsctl action (`after`) prints the no-change summary and leaves
    the service's MainPID as it was: the action recorded what it restarted with."""
    from tests.box.service import main_pid

    pid = main_pid(box)
    install(box, timeout=900)
    output = box.last_install_output
    summary = output[output.rindex("install summary"):]
    assert NO_CHANGE_LINE in summary, f"a plain install.sh after {after} changed something:\n{output[-3000:]}"
    assert main_pid(box) == pid, f"a plain install.sh after {after} restarted the service:\n{output[-3000:]}"
