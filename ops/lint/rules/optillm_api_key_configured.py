"""OPTILLM_API_KEY is set in the env file or in the unit's Environment=.

Why: optillm 0.3.12's get_config() sees OPTILLM_API_KEY and switches to local inference:
the proxy stops calling LiteLLM. It is also a secret in a place meant for settings.

Fails:
    OPTILLM_API_KEY=opx-...            (in /etc/optillm-proxy/env)
    Environment=OPTILLM_API_KEY=opx-... (in the unit or a drop-in)

Passes:
    the key in /etc/optillm-proxy/api-key, LoadCredential=api-key:/etc/optillm-proxy/api-key

Fix: delete the line; put the key in /etc/optillm-proxy/api-key (mode 0600). The launcher
refuses to start (exit 78) while the variable is present.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._environment import environment_refusals

ID = "optillm-api-key-configured"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    for path, line, message in environment_refusals(ctx, lambda name: name == "OPTILLM_API_KEY"):
        yield Problem(path, line, message)
