"""A booted Debian box: a throwaway copy of the base rootfs running a real systemd under systemd-nspawn.

The box shares the host's network (no --private-network): its 127.0.0.1:4020 is the host's, and it
reaches the host's 127.0.0.1:4000. Commands run inside through `nsenter -t <box PID 1> -a`, with a
clean environment (nothing of the host's leaks in).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cache import cache_dir
from tests.box.errors import BoxError

BOX_REPO = "/repo"
BOX_UV_CACHE = "/var/cache/uv"
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Environment for installs in the box: the uv cache bound from the host (no re-download), which
# install.sh documents as honoured. Nothing about certificates: install.sh must trust what the
# host trusts (the box's store holds the host's extra CAs, see base.py), as on an operator's host.
INSTALL_ENV = {
    "UV_CACHE_DIR": BOX_UV_CACHE,
    # The cache is a different mount in the box, so uv cannot hardlink from it: copy quietly.
    "UV_LINK_MODE": "copy",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def host_uv_cache() -> Path:
    env = os.environ.get("UV_CACHE_DIR")
    if env:
        return Path(env)
    uv = shutil.which("uv")
    if uv:
        out = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    return Path.home() / ".cache" / "uv"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_copies() -> None:
    """Copies whose session died without teardown (the owning pid is in the name)."""
    for old in cache_dir().glob("box-run-*"):
        try:
            owner = int(old.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(owner):
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class Result:
    cmd: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> "Result":
        if self.rc != 0:
            raise BoxError(f"in the box `{self.cmd}` exited {self.rc}:\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}")
        return self


@dataclass
class Box:
    repo: Path
    root: Path = field(default=None)
    log: Path = field(default=None)
    nspawn: subprocess.Popen | None = None
    pid1: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # PID namespaces of every boot (a reboot makes a new one): what teardown sweeps.
    pid_namespaces: set[str] = field(default_factory=set)
    # Extra systemd-nspawn arguments (the fleet boots each box in its own network namespace).
    nspawn_args: tuple[str, ...] = ()
    name: str = "optillm-box"

    # ---- lifecycle -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base: Path, repo: Path, tag: str = "") -> "Box":
        """A copy of base; `tag` tells apart several boxes of one session (box-run-TAG-PID)."""
        remove_stale_copies()
        root = cache_dir() / f"box-run-{tag + '-' if tag else ''}{os.getpid()}"
        shutil.rmtree(root, ignore_errors=True)
        start = time.monotonic()
        # --reflink=auto: instant on btrfs/xfs, a plain copy (a few seconds) elsewhere.
        proc = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise BoxError(f"copying the base rootfs failed: {proc.stderr.strip()}")
        box = cls(repo=repo, root=root, log=root.with_name(root.name + ".console.log"),
                  name=f"optillm-box-{tag + '-' if tag else ''}{os.getpid()}")
        box.timings["copy"] = time.monotonic() - start
        return box

    def boot(self, timeout: float = 120.0) -> float:
        uv_cache = host_uv_cache()
        uv_cache.mkdir(parents=True, exist_ok=True)
        cmd = ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
               "--console=passive", f"--machine={self.name}",
               f"--bind-ro={self.repo}:{BOX_REPO}", f"--bind={uv_cache}:{BOX_UV_CACHE}", *self.nspawn_args]
        start = time.monotonic()
        with open(self.log, "ab") as log:
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        self.pid1 = self._find_pid1(start, timeout)
        self.pid_namespaces.add(os.readlink(f"/proc/{self.pid1}/ns/pid"))
        self._wait_running(start, timeout)
        took = time.monotonic() - start
        self.timings.setdefault("boot", took)
        return took

    def _find_pid1(self, start: float, timeout: float) -> int:
        # The box's PID 1 is the nspawn process's child that runs systemd.
        while time.monotonic() - start < timeout:
            if self.nspawn.poll() is not None:
                raise BoxError(f"systemd-nspawn exited {self.nspawn.returncode}:\n{self.console_tail()}")
            for child in _children(self.nspawn.pid):
                if _comm(child) == "systemd":
                    return child
            time.sleep(0.1)
        raise BoxError(f"no systemd under systemd-nspawn after {timeout}s:\n{self.console_tail()}")

    def _wait_running(self, start: float, timeout: float) -> None:
        state = ""
        while time.monotonic() - start < timeout:
            if self.nspawn.poll() is not None:
                raise BoxError(f"systemd-nspawn exited {self.nspawn.returncode}:\n{self.console_tail()}")
            state = self.run("systemctl is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        failed = self.run("systemctl --failed --no-pager").stdout
        raise BoxError(f"box not booted after {timeout}s (state {state!r}):\n{failed}")

    def console_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def reboot(self, timeout: float = 120.0) -> float:
        """`systemctl reboot` in the box; nspawn exits with 133 and is started again on the same root.

        (What systemd-nspawn@.service does with RestartForceExitStatus=133 on a systemd host.)
        """
        start = time.monotonic()
        self.run("systemctl reboot")
        rc = self.wait_exit(timeout)
        if rc is None:
            raise BoxError(f"box did not go down within {timeout}s of `systemctl reboot`")
        if rc != 133:
            raise BoxError(f"systemd-nspawn exited {rc} on reboot, expected 133:\n{self.console_tail()}")
        self.pid1 = 0
        self.boot(timeout)
        return time.monotonic() - start

    def poweroff(self, timeout: float = 60.0) -> None:
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        # SIGTERM to nspawn asks the box's systemd for a clean halt.
        self.nspawn.send_signal(signal.SIGTERM)
        if self.wait_exit(timeout) is None:
            os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.wait_exit(10)

    def kill_leftovers(self) -> None:
        """Any process still in one of the box's PID namespaces (its PID 1 after nspawn died, or a
        stray command started through nsenter)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") in self.pid_namespaces:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue

    def destroy(self) -> None:
        self.poweroff()
        self.kill_leftovers()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        if self.log is not None:
            self.log.unlink(missing_ok=True)

    # ---- commands ---------------------------------------------------------------------------
    def nsenter_argv(self, env: dict[str, str] | None = None) -> list[str]:
        base_env = {"PATH": BOX_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        base_env.update(env or {})
        return ["nsenter", "-t", str(self.pid1), "-a", "--", "/usr/bin/env", "-i",
                *[f"{k}={v}" for k, v in base_env.items()]]

    def run(self, cmd: str, *, env: dict[str, str] | None = None, timeout: float = 600.0,
            input: str | None = None) -> Result:
        """Run a shell command line in the box as root; never raises on a non-zero exit."""
        if not self.pid1:
            raise BoxError("the box is not booted")
        argv = [*self.nsenter_argv(env), "/bin/bash", "-c", cmd]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  input=input, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return Result(cmd, 124, _text(exc.stdout), _text(exc.stderr) + f"\n(timed out after {timeout}s)")
        return Result(cmd, proc.returncode, proc.stdout, proc.stderr)

    def check(self, cmd: str, **kw) -> str:
        return self.run(cmd, **kw).check().stdout

    def quote(self, *words: str) -> str:
        return shlex.join(words)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
