"""Deliberate upgrades: validate a built runtime before it serves, switch, check, roll back by itself.

The steps talk to the machine only through `System` (systemctl, systemd-run, journalctl, opsctl
health/smoke/lint), so the decisions (when to switch, what to restore) are tested without systemd
and the box tests drive the same code against a real one.

Exit codes (also in `opsctl runtime --help` and the RUNBOOK):
  0  done (or nothing to do)
  1  refused at validation: nothing was switched, the service was not touched
  2  usage or installation problem (not root, no such runtime, unit missing, another upgrade running)
  3  failed after the switch; switched back and the service is healthy on the previous runtime
  4  failed after the switch AND the switch back did not bring it back healthy: act now
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ops.runtime import install_state
from ops.runtime import runtimes as rt
from ops.from_launcher.layout import DEFAULT, LISTEN_HOST, PROXY_URL, SERVICE, Layout

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_ROLLED_BACK, EXIT_DOWN = 0, 1, 2, 3, 4
HEALTH_OK, HEALTH_WARNING = 0, 1  # opsctl health (Monitoring Plugins codes)

START_TIMEOUT = 180.0  # full profile without bytecode needs ~18 s; a cold box more


class Failed(Exception):
    """A step failed; str() is the one line an operator reads."""


@dataclass
class Outcome:
    code: int
    message: str
    # The service was restarted (switched, or switched and back): what `--json` reports as changed.
    changed: bool = False


def spare_port() -> int:
    with socket.socket() as s:
        s.bind((LISTEN_HOST, 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 1) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


class System:
    """The real machine: systemd and opsctl as subprocesses."""

    def __init__(self, opsctl: list[str] | None = None, layout: Layout = DEFAULT) -> None:
        self.opsctl_argv = opsctl or _opsctl_argv()
        self.layout = layout

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            return 127, f"{argv[0]}: not found"
        except subprocess.TimeoutExpired:
            return 124, f"{' '.join(argv[:3])}: timed out after {timeout:.0f} s"
        return proc.returncode, (proc.stdout + proc.stderr)

    def optillm_problem(self, layout: Layout, runtime: rt.Runtime) -> str | None:
        """What the launcher would refuse in the runtime's optillm (its files, read in this process)."""
        try:
            rt.check_optillm(layout, runtime)
        except rt.RuntimeProblem as exc:
            return str(exc)
        return None

    def opsctl(self, *args: str, timeout: float = 300.0) -> tuple[int, str]:
        return self.run([*self.opsctl_argv, *args], timeout)

    def start_transient(self, argv: list[str]) -> tuple[int, str]:
        return self.run(argv, START_TIMEOUT)

    def stop_unit(self, name: str) -> None:
        self.run(["systemctl", "stop", name], 60)
        self.run(["systemctl", "reset-failed", name], 30)

    def unit_active(self, name: str) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", name], 30)[0] == 0

    def restart_service(self) -> tuple[int, str]:
        # A deliberate restart must not be refused by the start rate limit that earlier failures
        # (a candidate that failed after the switch) used up.
        self.run(["systemctl", "reset-failed", SERVICE], 30)
        result = self.run(["systemctl", "restart", SERVICE], START_TIMEOUT)
        # What it restarted with is what a plain install.sh must find unchanged (ops/runtime/install_state.py).
        install_state.record_restart(self.layout)
        return result

    def main_pid(self) -> str:
        return self.run(["systemctl", "show", "-p", "MainPID", "--value", SERVICE], 30)[1].strip()

    def journal(self, unit: str, since: float | None = None) -> str:
        """The unit's recent log: what the service itself wrote, or systemd's lines if it wrote nothing."""
        argv = ["journalctl", "-u", unit, "-o", "json", "--no-pager", "-n", "60",
                "--output-fields=MESSAGE,SYSLOG_IDENTIFIER"]
        if since is not None:
            argv.append(f"--since=@{int(since)}")
        own, systemd = [], []
        for line in self.run(argv, 30)[1].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("MESSAGE")
            if not isinstance(message, str):  # binary messages come as byte lists
                continue
            (systemd if entry.get("SYSLOG_IDENTIFIER") == "systemd" else own).append(message)
        return "\n".join(own or systemd)

    def healthz(self, url: str) -> bool:
        from ops.probes.http_probe import health_ok

        return health_ok(url, timeout=3)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _opsctl_argv() -> list[str]:
    """This same opsctl (the tools venv's, or the dev venv's under `uv run`)."""
    beside = Path(sys.executable).parent / "opsctl"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from ops.cli import main; main()"]


_BOILERPLATE = ("Starting ", "Started ", "Stopping ", "Stopped ", "Failed to start ", "Deactivated ")
_ERROR_MARKERS = ("Error", "error:", "refused", "Traceback", "No module named", "failed", "denied",
                  "status=", "timed out", "Timeout")


def _reason_from_journal(text: str) -> str:
    """The line in a failed start's log that says why (the last error-looking one)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    telling = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    for line in reversed(telling):
        if any(m in line for m in _ERROR_MARKERS):
            return line[:300]
    return (telling or lines or ["no log lines"])[-1][:300]


class Upgrader:
    def __init__(self, layout: Layout = DEFAULT, system: System | None = None,
                 say: Callable[[str], None] | None = None, start_timeout: float = START_TIMEOUT) -> None:
        self.layout = layout
        self.system = system or System(layout=layout)
        self.say = say or (lambda line: print(f"==> {line}", file=sys.stderr, flush=True))
        self.start_timeout = start_timeout

    # --- the pieces -----------------------------------------------------------------------------

    def wait_healthy(self, url: str, unit: str, since: float | None = None) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.system.healthz(url):
                return
            if not self.system.unit_active(unit):
                raise Failed(f"{unit} stopped before {url}/health answered: "
                             f"{_reason_from_journal(self.system.journal(unit, since))} (see: journalctl -u {unit})")
            self.system.sleep(0.5)
        raise Failed(f"{url}/health did not answer within {self.start_timeout:.0f} s (see: journalctl -u {unit})")

    def validate(self, candidate: rt.Runtime) -> None:
        """Lint the runtime, start it as a transient unit on a spare port, smoke it, stop it."""
        from ops.runtime.transient_unit import UnitProblem, build

        self.say(f"checking {candidate.name}'s optillm against the launcher's patch points")
        problem = self.system.optillm_problem(self.layout, candidate)
        if problem:
            raise Failed(problem)
        rt.check_complete(self.layout, candidate)
        self.say(f"validating {candidate.describe()}: opsctl lint --venv")
        code, out = self.system.opsctl("lint", "--venv", str(candidate.path))
        if code != 0:
            raise Failed(f"opsctl lint --venv {candidate.path} exited {code}: {_tail(out)}")

        port = spare_port()
        name = f"{SERVICE}-validate-{secrets.token_hex(3)}"
        try:
            unit = build(self.layout.unit_file, candidate.path, port, name)
        except UnitProblem as exc:
            raise Failed(str(exc)) from None
        self.say(f"starting it as transient unit {name} on 127.0.0.1:{port} (the installed unit's hardening)")
        try:
            code, out = self.system.start_transient(unit.systemd_run_argv())
            if code != 0:
                raise Failed(f"{candidate.name} did not start under the service's unit settings: "
                             f"{_reason_from_journal(self.system.journal(name))} (see: journalctl -u {name})")
            url = f"http://{LISTEN_HOST}:{port}"
            self.wait_healthy(url, name)
            self.say(f"smoke through the real upstream: opsctl smoke --all --url {url}")
            code, out = self.system.opsctl("smoke", "--all", "--url", url)
            if code != 0:
                raise Failed(f"opsctl smoke --all against the candidate exited {code}: {_tail(out)}")
        finally:
            self.system.stop_unit(name)

    def restart_and_check(self, what: str) -> None:
        self.say(f"restarting {SERVICE} on {what}")
        since = time.time() - 1
        code, out = self.system.restart_service()
        if code != 0:
            raise Failed(f"systemctl restart {SERVICE} failed on {what}: "
                         f"{_reason_from_journal(self.system.journal(SERVICE, since))} (see: journalctl -u {SERVICE})")
        self.wait_healthy(PROXY_URL, SERVICE, since)
        code, out = self.system.opsctl("health")
        # WARNING (1) is healthy but slow, which a box busy with a restart may well be.
        if code not in (HEALTH_OK, HEALTH_WARNING):
            raise Failed(f"opsctl health exited {code} on {what}: {_tail(out)}")
        code, out = self.system.opsctl("smoke", "--all")
        if code != 0:
            raise Failed(f"opsctl smoke --all exited {code} on {what}: {_tail(out)}")

    def _switch_back(self, before: rt.Links, failure: str, failure_code: int) -> Outcome:
        """Restore the links as they were and restart once more; the service must come back."""
        back_to = before.current.name if before.current else "?"
        self.say(f"FAILED: {failure}; switching back to {back_to}")
        rt.restore(self.layout, before)
        try:
            self.restart_and_check(back_to)
        except Exception as again:
            return Outcome(EXIT_DOWN, f"{failure}; switching back to {back_to} ALSO failed: {again}", changed=True)
        return Outcome(failure_code, f"{failure}; switched back to {back_to}, which is serving and healthy",
                       changed=True)

    # --- the commands ---------------------------------------------------------------------------

    def upgrade(self, runtime_dir: Path, prune: bool = True) -> Outcome:
        candidate = rt.load(self.layout, runtime_dir)
        before = rt.snapshot(self.layout)
        if before.current is None:
            raise rt.RuntimeProblem(f"{self.layout.current} is missing: run install.sh first, then upgrade")
        if os.path.realpath(before.current) == os.path.realpath(candidate.path):
            return Outcome(EXIT_OK, f"{candidate.name} is already current: nothing to do")
        try:
            self.validate(candidate)
        except (Failed, rt.RuntimeProblem) as exc:
            rt.mark_refused(candidate, str(exc))
            return Outcome(EXIT_REFUSED, f"refused {candidate.name} at validation, {SERVICE} untouched: {exc}")
        rt.clear_refused(candidate)

        self.say(f"validated; switching current -> {candidate.name} (previous -> {before.current.name})")
        rt.activate(self.layout, candidate.path)
        try:
            self.restart_and_check(candidate.name)
        except Failed as exc:
            return self._switch_back(before, str(exc), EXIT_ROLLED_BACK)
        except Exception as exc:  # never leave the links switched to an unchecked runtime
            return self._switch_back(before, f"internal error after the switch: {type(exc).__name__}: {exc}",
                                     EXIT_ROLLED_BACK)
        removed = rt.prune(self.layout) if prune else []
        note = f"; pruned {', '.join(p.name for p in removed)}" if removed else ""
        return Outcome(EXIT_OK, f"upgraded to {candidate.describe()}; previous is {before.current.name} "
                                f"(back with: install.sh --rollback){note}", changed=True)

    def rollback(self) -> Outcome:
        before = rt.swap(self.layout)
        target = before.previous.name
        try:
            self.restart_and_check(target)
        except Failed as exc:
            return self._switch_back(before, f"rollback to {target} failed: {exc}", EXIT_ROLLED_BACK)
        except Exception as exc:
            return self._switch_back(before, f"rollback to {target} failed: internal error: "
                                             f"{type(exc).__name__}: {exc}", EXIT_ROLLED_BACK)
        return Outcome(EXIT_OK, f"rolled back to {target}; previous is now {before.current.name}", changed=True)


class Busy(Exception):
    pass


def exclusive(layout: Layout):
    """One upgrade or rollback at a time (a second one would switch links under the first)."""
    path = layout.prefix / ".runtime-switch.lock"
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Busy(f"another upgrade or rollback is running (lock {path}); wait for it to finish") from None
    return handle
