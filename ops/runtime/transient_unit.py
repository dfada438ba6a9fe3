"""The installed unit, re-expressed as a transient `systemd-run` unit for validating a runtime.

Every [Service] setting of the installed unit file and its drop-ins is passed on as `-p`, so a
candidate runtime is validated under exactly the hardening, user, credentials and environment it
will get; only what must differ is changed: the runtime path, the port, no restarts, and nothing
that would act on the live service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ops.from_launcher.layout import DEFAULT, LISTEN_PORT

# The unit names the runtime through this path; the candidate replaces it.
DEPLOYED_CURRENT = str(DEFAULT.current)

# Settings not carried over: ExecStart is rebuilt; the post/stop hooks act on the live service's
# port or state; restarts would hide a crash that validation must see.
_DROPPED = {
    "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost",
    "Restart", "RestartSec", "RestartSteps", "RestartMaxDelaySec",
    "RestartPreventExitStatus", "RestartForceExitStatus",
}


class UnitProblem(Exception):
    """The installed unit cannot be reproduced as a transient unit; the message says why."""


@dataclass(frozen=True)
class TransientUnit:
    name: str
    properties: list[tuple[str, str]]
    command: list[str]

    def systemd_run_argv(self) -> list[str]:
        argv = ["systemd-run", f"--unit={self.name}", "--collect", "--quiet",
                f"--description=optillm-proxy runtime validation ({self.name})"]
        argv += [f"--property={key}={value}" for key, value in self.properties]
        return argv + ["--", *self.command]


def _rewrite_port(words: list[str], port: int) -> list[str]:
    out, replaced = [], False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--port" and i + 1 < len(words):
            out += ["--port", str(port)]
            i += 2
            replaced = True
            continue
        if word.startswith("--port="):
            out.append(f"--port={port}")
            replaced = True
        else:
            out.append(word)
        i += 1
    if not replaced:
        raise UnitProblem("the unit's ExecStart has no --port: cannot start a candidate on a spare port")
    return out


def _candidate_path(value: str, runtime: Path) -> str:
    return value.replace(DEPLOYED_CURRENT, str(runtime))


def build(unit_file: Path, runtime: Path, port: int, name: str) -> TransientUnit:
    """A transient unit running `runtime` on `port`, otherwise as the installed unit runs the service."""
    from ops.lint.readers.unitfile import read_unit, split_words

    unit = read_unit(unit_file)
    if unit.unreadable:
        path, why = unit.unreadable[0]
        raise UnitProblem(f"cannot read the installed unit {path}: {why} (run install.sh)")
    if unit.problems:
        path, line, why = unit.problems[0]
        raise UnitProblem(f"{path}:{line}: {why} (fix it, or check with: opsctl lint)")

    exec_start = unit.last("Service", "ExecStart")
    if exec_start is None:
        raise UnitProblem(f"{unit_file} has no ExecStart (run install.sh)")
    words = split_words(_candidate_path(exec_start.value, runtime))
    if not words:
        raise UnitProblem(f"{exec_start.path}:{exec_start.line}: cannot split ExecStart into words")
    # Exec prefixes (-, @, :, +, !) are not part of the command systemd-run takes.
    words[0] = words[0].lstrip("-@:+!")
    command = _rewrite_port(words, port)

    properties: list[tuple[str, str]] = []
    has_runtime_dir = False
    for d in unit.directives:
        if d.section != "Service" or d.key in _DROPPED:
            continue
        if "%" in d.value:
            raise UnitProblem(
                f"{d.path}:{d.line}: {d.key}= uses a %-specifier, which a transient unit does not expand; "
                "write the value out")
        value = _candidate_path(d.value, runtime)
        if d.key == "SocketBindAllow":
            value = re.sub(rf"\b{LISTEN_PORT}\b", str(port), value)
        if d.key == "RuntimeDirectory" and d.value:
            has_runtime_dir = True
        properties.append((d.key, value))
    properties.append(("Restart", "no"))
    if has_runtime_dir:
        # Shared with the live service: stopping the candidate must not delete it under it.
        properties.append(("RuntimeDirectoryPreserve", "yes"))
    return TransientUnit(name=name, properties=properties, command=command)
