"""ExecStart sets --approach auto.

Why: optillm 0.3.12 rejects it (`argument --approach: invalid choice: 'auto'`): the service
exits at once, and with Restart= it flaps. Auto is reached only by leaving --approach out.

Fails:
    ExecStart=... --approach auto ...

Passes:
    ExecStart=... (no --approach)

Fix: remove --approach from ExecStart.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import command_refusal

ID = "approach-auto"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def _check(argv: list[str]) -> None:
    for value in settings.option_values(argv, "--approach"):
        if value == "auto":
            settings.check_approach_value(value)


def check(ctx):
    found = command_refusal(ctx, _check)
    if found:
        d, message = found
        yield Problem(d.path, d.line, message)
