"""`opsctl runtime check`: would the service start with the configuration on disk now?

Runs the launcher itself with `--check` in a transient unit built from the installed unit and its
drop-ins (ops/runtime/transient_unit.py: the same user, sandbox, env file and credentials), so the answer
comes from the very checks a start runs, plugin imports included: one implementation, no second
opinion. install.sh runs it before every restart and leaves a healthy service alone when the
launcher would refuse the new configuration.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from ops.from_launcher.layout import Layout

CHECK_TIMEOUT = 180.0  # the full profile imports every plugin
REFUSED_PREFIX = "optillm-proxy-launcher: refused: "
ACCEPTED_PREFIX = "optillm-proxy-launcher: configuration accepted"


@dataclass(frozen=True)
class CheckResult:
    accepted: bool
    line: str  # the launcher's verdict, one line


def argv(layout: Layout, runtime: Path) -> list[str]:
    """systemd-run for the check: the installed unit's settings, the launcher with --check."""
    from ops.runtime.transient_unit import build
    from ops.runtime.upgrade import spare_port

    name = f"optillm-proxy-check-{secrets.token_hex(4)}"
    unit = build(layout.unit_file, runtime, spare_port(), name)
    # The check exits instead of sending READY=1: an `exec` service whose exit status is the answer.
    properties = [(k, v) for k, v in unit.properties if k not in ("Type", "WatchdogSec", "NotifyAccess")]
    properties.append(("Type", "exec"))
    return (["systemd-run", f"--unit={name}", "--collect", "--quiet", "--wait", "--pipe",
             f"--description=optillm-proxy configuration check ({name})"]
            + [f"--property={k}={v}" for k, v in properties] + ["--", *unit.command, "--check"])


def verdict(code: int, output: str) -> CheckResult:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    refused = [line for line in lines if line.startswith(REFUSED_PREFIX)]
    if code == 0 and any(line.startswith(ACCEPTED_PREFIX) for line in lines):
        return CheckResult(True, next(line for line in lines if line.startswith(ACCEPTED_PREFIX)))
    if refused:
        return CheckResult(False, refused[-1])
    tail = lines[-1] if lines else "(no output)"
    return CheckResult(False, f"the check exited {code} without a verdict: {tail}")


def check(layout: Layout, runtime: Path, run) -> CheckResult:
    """`run(argv, timeout) -> (code, output)` runs a command (ops.runtime.upgrade.System.run)."""
    code, output = run(argv(layout, runtime), CHECK_TIMEOUT)
    return verdict(code, output)
