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

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command

ID = "key-on-command-line"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    if any(flag == "--optillm-api-key" for flag, _ in es.command.seen):
        d = es.directive
        yield Problem(d.path, d.line, "--optillm-api-key on ExecStart is readable by every "
                                      "local user; use LoadCredential=api-key:... and rotate "
                                      "the key")
