"""ExecStart sets --approach proxy.

Why: measured on 0.3.12: with --approach proxy, `moa-jerry-xl` becomes `proxy-moa-jerry-xl`,
only the first approach (proxy) runs, and no strategy ever fans out, while every request
still answers 200. The gateway silently stops doing its job.

Fails:
    ExecStart=... --approach proxy ...

Passes:
    ExecStart=... (no --approach: the model-name prefix picks the strategy)

Fix: remove --approach from ExecStart.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import command_refusal

ID = "approach-proxy"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def _check(argv: list[str]) -> None:
    for value in settings.option_values(argv, "--approach"):
        if value == "proxy":
            settings.check_approach_value(value)


def check(ctx):
    found = command_refusal(ctx, _check)
    if found:
        d, message = found
        yield Problem(d.path, d.line, message)
