"""The proxy key starts with `sk-`.

Why: measured on 0.3.12: a client bearer token that starts with `sk-` is reused as the
upstream API key. Every request would reach LiteLLM with the proxy key instead of the LiteLLM
key (the upstream-key credential): LiteLLM rejects it, or worse, it is a valid key for something
else. The launcher refuses to start (exit 78) with such a key; lint calls its own check
(settings.check_proxy_key), so the message is the launcher's.

Fails:
    sk-proxy-0123456789abcdef0123456789abcdef

Passes:
    opx-Zq3v0m2T4sJ7x1dY8kP5wR9nB6cL2hF0aE4uG7iK1oM

Fix: generate a key that does not start with `sk-` (install.sh uses the `opx-` prefix),
update LiteLLM's api_key for the proxy entries, restart the service.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "key-sk-prefix"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    text = ctx.key_text
    if text is None:
        return
    try:
        settings.check_proxy_key(text.strip())
    except settings.ConfigRefused as exc:
        yield Problem(str(ctx.inputs.key_file), 1, REFUSES + str(exc))
