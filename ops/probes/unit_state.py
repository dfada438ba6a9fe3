"""Why the local service is down, as systemd sees it: one clause for a probe's CRITICAL line,
or what it is doing instead (a drain, a restart) when the probe got no answer because of that.

A crash loop ends at StartLimitBurst: systemd then refuses every start, the socket's included,
and the port refuses connections. Said plainly, the operator knows the service will not come back
by itself and what brings it back. Read only on a failed probe of this host's own proxy (a plain
`systemctl show`, allowed to any user); '' where systemd cannot be asked.
"""

from __future__ import annotations

import subprocess

from ops.from_launcher.layout import SERVICE, SOCKET_UNIT

PROPERTIES = ("Id", "ActiveState", "SubState", "Result", "StatusText")
# The service is on its way somewhere (a restart's drain, a start): with the socket listening,
# connections wait in its backlog and are served when it is up.
TRANSITIONS = ("deactivating", "activating", "reloading")
SYSTEMCTL_TIMEOUT_S = 2.0


def read(runner=None, timeout: float = SYSTEMCTL_TIMEOUT_S) -> list[dict[str, str]]:
    """[{Id, ActiveState, Result}] for the service and its socket; [] if systemctl cannot tell
    within `timeout` seconds (at most SYSTEMCTL_TIMEOUT_S)."""
    argv = ["systemctl", "show", *(f"-p{p}" for p in PROPERTIES), f"{SERVICE}.service", SOCKET_UNIT]
    try:
        proc = (runner or _run)(argv, min(timeout, SYSTEMCTL_TIMEOUT_S))
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    units, current = [], {}
    for line in proc.stdout.splitlines() + [""]:
        if not line:
            if current:
                units.append(current)
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return units


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)


def describe(units: list[dict[str, str]]) -> str:
    """One clause naming each failed unit with its Result, and what to do; "" when none failed."""
    down = [u for u in units if u.get("ActiveState") == "failed"]
    if not down:
        return ""
    states = ", ".join(f"{u.get('Id', '?')} failed ({u.get('Result', '?')})" for u in down)
    if any("start-limit" in u.get("Result", "") for u in down):
        return (f"{states}: systemd refuses further starts after a crash loop; see journalctl -u {SERVICE} -b, "
                f"then sudo systemctl reset-failed {SERVICE} {SOCKET_UNIT} && sudo systemctl start {SOCKET_UNIT} "
                f"{SERVICE} (or re-run sudo ./install.sh)")
    return f"{states}: see journalctl -u {SERVICE} -b"


def transition(units: list[dict[str, str]]) -> str:
    """One clause when the service is stopping (draining), restarting or starting while its socket
    listens: a probe then waits in the backlog, which is no failure. "" otherwise."""
    by_id = {u.get("Id"): u for u in units}
    unit, socket_unit = by_id.get(f"{SERVICE}.service", {}), by_id.get(SOCKET_UNIT, {})
    state = unit.get("ActiveState", "")
    if state not in TRANSITIONS or socket_unit.get("ActiveState") != "active":
        return ""
    status = unit.get("StatusText", "")
    return (f"{SERVICE}.service is {state} ({unit.get('SubState', '?')}){': ' + status if status else ''}; "
            f"new connections wait in {SOCKET_UNIT}'s backlog until it serves again")
