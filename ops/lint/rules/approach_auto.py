"""ExecStart sets --approach auto.

Why: optillm 0.3.12 rejects it (`argument --approach: invalid choice: 'auto'`): the service
exits at once, and with Restart= it flaps. Auto is reached only by leaving --approach out.

Fails:
    ExecStart=... --approach auto ...

Passes:
    ExecStart=... (no --approach)

Fix: remove --approach from ExecStart.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command

ID = "approach-auto"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is not None and es.command.flags.get("--approach") == "auto":
        d = es.directive
        yield Problem(d.path, d.line, "--approach auto is rejected by optillm 0.3.12 (invalid "
                                      "choice); remove --approach to get auto mode")
