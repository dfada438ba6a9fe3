"""OPENAI_API_KEY is set in the env file (or the unit's Environment=).

Why: the LiteLLM key is a credential now (/etc/optillm-proxy/upstream-key, LoadCredential=
upstream-key): a variable is readable in /proc/PID/environ (and, from Environment=, in
`systemctl show`), and the env file holds no secret. The launcher refuses to start (exit 78) while OPENAI_API_KEY is in its
environment, even empty; an env file from an earlier install still has the line until
install.sh moves it. Lint calls the launcher's own check (settings.check_environment), so the
message is the launcher's.

Fails:
    OPENAI_API_KEY=sk-litellm-virtual-key     (in /etc/optillm-proxy/env)
    Environment=OPENAI_API_KEY=...            (in the unit or a drop-in)

Passes:
    no OPENAI_API_KEY= line; the key alone in /etc/optillm-proxy/upstream-key (root 0600)

Fix: re-run `sudo ./install.sh`: it moves the key to /etc/optillm-proxy/upstream-key when that
file is absent or empty, removes the line when the file holds the same key, and leaves both (with
a note) when they differ. Or by hand:
write the key to /etc/optillm-proxy/upstream-key (one line, chmod 0600), delete the line, restart
the service.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._environment import environment_refusals

ID = "upstream-key-in-env-file"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    # The launcher's message names the variable, never its value.
    for path, line, message in environment_refusals(ctx, lambda name: name == settings.UPSTREAM_KEY_VARIABLE):
        yield Problem(path, line, message)
