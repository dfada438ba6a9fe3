"""The proxy key is written on ExecStart (--optillm-api-key VALUE).

Why: a process's command line is readable by every local user (`ps -eo args`,
/proc/PID/cmdline), and the unit file is world-readable too.

Fails:
    ExecStart=... --optillm-api-key opx-abc...

Passes:
    LoadCredential=api-key:/etc/optillm-proxy/api-key
    (the launcher reads $CREDENTIALS_DIRECTORY/api-key and passes it in-process)

Fix: remove --optillm-api-key from ExecStart, put the key in /etc/optillm-proxy/api-key
(0600), keep LoadCredential=, and rotate the key: it has been exposed.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import command_refusal

ID = "key-on-command-line"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    found = command_refusal(ctx, settings.check_key_not_on_command_line)
    if found:
        d, message = found
        yield Problem(d.path, d.line, message)
