"""ExecStart sets --log debug.

Why: at debug level optillm and its HTTP clients log request headers, bearer tokens
included, into the journal, which far more people can read than the key file.

Fails:
    ExecStart=... --log debug

Passes:
    ExecStart=... (no --log, or --log info)

Fix: remove --log debug (use it only briefly, then rotate the keys).
"""

from ops.lint.finding import WARNING, Problem
from ops.lint.rules._command import optillm_command

ID = "log-debug"
SEVERITY = WARNING


def check(ctx):
    es = optillm_command(ctx)
    if es is not None and (es.command.flags.get("--log") or "").lower() == "debug":
        d = es.directive
        yield Problem(d.path, d.line, "--log debug writes bearer tokens into the journal; "
                                      "remove it")
