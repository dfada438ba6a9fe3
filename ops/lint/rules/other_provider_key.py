"""CEREBRAS_API_KEY or AZURE_OPENAI_API_KEY is set in the env file (or the unit's Environment=).

Why: stock 0.3.12 picks its upstream client by which of these keys is set, ahead of the LiteLLM
key; the launcher's one upstream client only ever calls LiteLLM with the upstream-key
credential, so such a key would be silently ignored, and it is a secret in the environment. The
launcher refuses to start (exit 78) while one is set. Lint calls the launcher's own check
(settings.check_environment), so the message is the launcher's.

Fails:
    CEREBRAS_API_KEY=csk-...                  (in /etc/optillm-proxy/env)
    Environment=AZURE_OPENAI_API_KEY=...      (in the unit or a drop-in)

Passes:
    neither set: LiteLLM holds the providers' keys; the proxy only has its LiteLLM key

Fix: delete the line; route the provider through LiteLLM (its config holds the provider key),
then restart the service.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._environment import environment_refusals

ID = "other-provider-key"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    for path, line, message in environment_refusals(ctx, lambda name: name in settings.OTHER_PROVIDER_KEYS):
        yield Problem(path, line, message)
