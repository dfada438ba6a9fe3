"""An OPTILLM_* variable (other than OPTILLM_API_KEY) is set for the service.

Why: every optillm 0.3.12 flag takes its default from an OPTILLM_* variable
(OPTILLM_APPROACH, OPTILLM_HOST, OPTILLM_BASE_URL, ...). A stray one silently changes
behaviour the unit's ExecStart seems to fix, and nothing in `systemctl cat` shows it. The
shipped launcher refuses to start (exit 78) while one is set; a plain `optillm` ExecStart
would run with it silently. The design asks for at least a warning; it is an error here because
the service this toolkit installs will not start with it, and lint must say so before a restart.

Fails:
    OPTILLM_APPROACH=proxy             (env file or Environment=)

Passes:
    the setting as a flag on ExecStart (visible, reviewed), or not at all.

Fix: remove the variable; if the setting is really wanted, put the flag on ExecStart in a
drop-in.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._environment import environment_refusals

ID = "optillm-variable"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    stray = lambda name: name.startswith("OPTILLM_") and name != "OPTILLM_API_KEY"  # noqa: E731
    for path, line, message in environment_refusals(ctx, stray):
        yield Problem(path, line, message)
