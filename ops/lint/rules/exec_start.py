"""The unit has no usable ExecStart= (none, several, broken quoting, or not optillm).

Why: every other unit rule reads optillm's flags from ExecStart. A Type=notify service takes
exactly one ExecStart; a drop-in that adds one without first resetting it (`ExecStart=`)
makes the unit fail to load. A command that is neither the launcher nor optillm cannot be
checked.

Fails:
    [Service]
    ExecStart=/usr/bin/env optillm --port 4020

Passes:
    [Service]
    ExecStart=/opt/optillm-proxy/current/bin/python -I /opt/optillm-proxy/current/libexec/optillm-proxy-launcher.py --host 127.0.0.1 --port 4020 --base-url http://127.0.0.1:4000/v1 --model jerry-xl

Fix: keep the shipped ExecStart; in a drop-in, write `ExecStart=` (empty) before the new one.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.readers.execstart import parse_exec_start
from ops.lint.rules._launcher import refusal

ID = "exec-start"
SEVERITY = ERROR


def check(ctx):
    unit = ctx.unit
    if unit is None:
        return
    found = unit.effective("Service", "ExecStart")
    if not found:
        yield Problem(unit.files[0], 0, "no ExecStart= in [Service]; restore the shipped unit")
        return
    if len(found) > 1:
        yield Problem(found[-1].path, found[-1].line,
                      f"{len(found)} ExecStart= lines in force (also {found[0].path}:"
                      f"{found[0].line}); put `ExecStart=` (empty) before the new one")
        return
    d = found[0]
    cmd = parse_exec_start(d.value)
    if cmd.error:
        yield Problem(d.path, d.line, f"ExecStart: {cmd.error}; fix the quoting")
    elif cmd.form == "unknown":
        yield Problem(d.path, d.line, f"ExecStart runs {cmd.program!r}, neither <python> "
                                      "<launcher> nor optillm; lint cannot check its flags")
    elif cmd.form == "launcher":
        message = refusal(settings.listen_address, cmd.args)
        if message:
            yield Problem(d.path, d.line, message)
