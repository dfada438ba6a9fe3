"""Applying a change to the running service: a reload when a new launcher can take it, else a restart.

A reload (`systemctl reload`, launcher/optillm_proxy_launcher/reload.py) starts a new launcher on the
same runtime and unit, hands it the socket and lets the old one drain: new requests never wait. It
applies what a launcher reads at its start: the env file, both keys, the provider file. Anything else
(another runtime, new launcher code, unit files, first start) needs a restart. This function is the
one place that decides; install.sh and `opsctl key rotate` call it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.from_launcher.layout import SERVICE, Layout
from ops.runtime import install_state

# install_state's components a reload applies (what a launcher reads when it starts).
RELOADABLE = ("env-file", "key-file", "upstream-key", "provider-file")
RELOAD_TIMEOUT = 90.0  # systemd bounds the reload itself by TimeoutStartSec=


@dataclass(frozen=True)
class Applied:
    action: str  # "reloaded" or "restarted"
    code: int  # systemctl's exit status
    detail: str  # why a reload became a restart, or why it failed; "" otherwise


def reloadable(reasons: list[str]) -> bool:
    """Does a reload apply every change in `reasons` (install_state components)?"""
    return bool(reasons) and all(reason in RELOADABLE for reason in reasons)


def decide(reasons: list[str], active: bool, can_reload: bool) -> str:
    """"reload" when every reason is reloadable and the service runs a unit that can; else "restart"."""
    return "reload" if active and can_reload and reloadable(reasons) else "restart"


def unit_can_reload(system) -> bool:
    code, out = system.run(["systemctl", "show", "-p", "CanReload", "--value", SERVICE], 30)
    return code == 0 and out.strip() == "yes"


def reload_refusal(system, since: float) -> str:
    """The reload helper's refusal line from the journal (the running launcher's reason), or ""."""
    from ops.from_launcher import reload

    lines = [line for line in system.journal(SERVICE, since).splitlines()
             if line.startswith(reload.HELPER_PREFIX + "refused")]
    return lines[-1][len(reload.HELPER_PREFIX):] if lines else ""


def apply_change(layout: Layout, reasons: list[str], system=None) -> Applied:
    """Reload or restart the service for `reasons`; records what it then runs with (install_state),
    so a plain install.sh afterwards finds nothing changed. A reload the running launcher refuses
    leaves it serving unchanged and is returned as such, except when the refusal itself says a
    restart applies it (too little memory for two launchers, a launcher without reload support)."""
    import time

    from ops.from_launcher import reload
    from ops.runtime.upgrade import System

    system = system or System(layout=layout)
    active = system.unit_active(SERVICE)
    if decide(reasons, active, active and unit_can_reload(system)) == "restart":
        code, _ = system.restart_service()  # records after it
        return Applied("restarted", code, "")
    since = time.time() - 1
    code, out = system.run(["systemctl", "reload", SERVICE], RELOAD_TIMEOUT)
    if code == 0:
        install_state.record_restart(layout)
        return Applied("reloaded", 0, "")
    why = reload_refusal(system, since)
    if not why and out.strip():
        why = out.strip().splitlines()[-1]
    if reload.RESTART_INSTEAD in why:
        code, _ = system.restart_service()
        return Applied("restarted", code, f"reload refused ({why}); restarted instead")
    return Applied("reloaded", code, why or f"systemctl reload {SERVICE} failed: see journalctl -u {SERVICE}")


USAGE = "usage: python -m ops.runtime.service apply ROOT [CHANGED-COMPONENT...]"


def main(argv: list[str]) -> int:
    """install.sh's entry: `apply / [changed-component...]` (none: a start); prints `reloaded` or `restarted` and, on a
    line of its own, why a reload was refused or became a restart. Exit: systemctl's status
    (0 applied), 2 on usage."""
    import sys
    from pathlib import Path

    if argv[:1] != ["apply"] or len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    applied = apply_change(Layout(Path(argv[1])), argv[2:])
    print(applied.action)
    if applied.detail:
        print(applied.detail)
    return applied.code


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
