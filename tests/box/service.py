"""The optillm-proxy service as seen from outside the box: its PID, its /health, restarts timed.

The box shares the host network, so /health is polled from the host at 127.0.0.1:4020; timing is
measured here (reported, never asserted against a number: the machine is shared and noisy).
"""

from __future__ import annotations

import os
import signal
import time

from ops.probes.http_probe import health_ok
from ops.probes.http_probe import wait_healthy as wait_healthy_url
from ops.from_launcher.layout import LISTEN_PORT, SERVICE
from tests.box.errors import BoxError
from tests.box.machine import Box

PROXY_URL = f"http://127.0.0.1:{LISTEN_PORT}"
HEALTH_URL = f"{PROXY_URL}/health"


def healthy() -> bool:
    return health_ok(PROXY_URL)


def show(box: Box, *props: str, unit: str = SERVICE) -> dict[str, str]:
    out = box.check(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main_pid(box: Box) -> int:
    """MainPID in the box's PID namespace."""
    return int(show(box, "MainPID")["MainPID"])



def _host_pid(box: Box, box_pid: int) -> int:
    # Walk the host's /proc for the process whose innermost NSpid is box_pid inside this box.
    box_ns = os.readlink(f"/proc/{box.pid1}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != box_ns:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == box_pid:
                            return int(entry)
                        break
        except (OSError, ValueError):
            continue
    raise BoxError(f"no host process for box pid {box_pid}")


def wait_healthy(box: Box, timeout: float = 180.0, *, not_pid: int = 0) -> float:
    """Seconds until /health answers and systemd has the unit active (READY=1 seen) with a main
    PID other than `not_pid`: serving, and known to be serving."""
    def serving() -> bool:
        now = show(box, "MainPID", "ActiveState")
        return now["ActiveState"] == "active" and int(now["MainPID"]) not in (0, not_pid)

    took = wait_healthy_url(PROXY_URL, timeout, ready=serving, interval=0.1)
    if took is not None:
        return took
    raise BoxError(f"{SERVICE} not healthy within {timeout}s:\n{journal(box, 40)}\n"
                   f"{box.run(f'systemctl status {SERVICE} --no-pager').stdout}")


def kill_and_recover(box: Box, sig: int = signal.SIGKILL, timeout: float = 180.0) -> float:
    """Signal the main process; seconds until a new main process serves /health."""
    old = main_pid(box)
    if not old:
        raise BoxError(f"{SERVICE} has no main PID")
    start = time.monotonic()
    os.kill(_host_pid(box, old), sig)
    # /health must first stop answering with the old process gone, or we would time nothing.
    wait_healthy(box, timeout, not_pid=old)
    return time.monotonic() - start


def journal(box: Box, lines: int = 60, since_start: bool = False) -> str:
    return box.run(f"journalctl -u {SERVICE} --no-pager -n {lines} -o cat").stdout


def n_restarts(box: Box) -> int:
    return int(show(box, "NRestarts")["NRestarts"])


def reset_start_limit(box: Box) -> None:
    """Clear the unit's start-rate counter (StartLimitBurst=): a test that measures one restart
    must not fail because other tests restarted the service in the same interval."""
    box.check(f"systemctl reset-failed {SERVICE}")


def what_could_start_it(box: Box) -> str:
    """'' when systemd has nothing left that could start the service again, else what could.

    A start is always a job: the restart timer queues one (SubState auto-restart, ActiveState
    activating), a connection on a listening socket queues another. So a failed service whose
    socket does not listen, with no job queued for either, stays put: no wait can add to that.
    """
    unit = show(box, "ActiveState", "SubState")
    socket_state = show(box, "ActiveState", unit=f"{SERVICE}.socket")["ActiveState"]
    jobs = [line for line in box.check("systemctl list-jobs --no-legend --plain").splitlines()
            if f" {SERVICE}." in f" {line}"]
    if unit["ActiveState"] != "failed":
        return f"service {unit['ActiveState']}/{unit['SubState']}"
    if socket_state in ("active", "activating"):
        return f"socket {socket_state}: a connection would start the service"
    return f"jobs queued: {jobs}" if jobs else ""


def wait_settled_failed(box: Box, timeout: float = 180.0) -> str:
    """Poll (bounded) until the service failed and nothing can start it again; '' then, else
    what still could (the caller asserts)."""
    deadline = time.monotonic() + timeout
    why = what_could_start_it(box)
    while why and time.monotonic() < deadline:
        time.sleep(0.5)
        why = what_could_start_it(box)
    return why
