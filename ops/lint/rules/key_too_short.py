"""The proxy key in the key file is shorter than 32 characters, or not a single line.

Why: the key is the only thing between any local process and the proxy (and, through it,
the LiteLLM budget). install.sh generates `opx-` + 43 base64url characters (32 random bytes);
a short hand-made key can be guessed. The launcher refuses a key with spaces or a second
line (usually a paste accident).

Fails:
    changeme

Passes:
    opx-Zq3v0m2T4sJ7x1dY8kP5wR9nB6cL2hF0aE4uG7iK1oM

Fix: generate a new key: `python3 -c 'import secrets; print("opx-" + secrets.token_urlsafe(32))'
> /etc/optillm-proxy/api-key`, chmod 0600, restart the service and update LiteLLM's api_key.
"""

from ops.lint.finding import ERROR, Problem

ID = "key-too-short"
SEVERITY = ERROR
MIN_LENGTH = 32


def check(ctx):
    text = ctx.key_text
    if text is None:
        return
    key = text.strip()
    if len(key) < MIN_LENGTH:
        yield Problem(str(ctx.inputs.key_file), 1,
                      f"proxy key is {len(key)} characters, needs at least {MIN_LENGTH}; "
                      "generate one: opx- + secrets.token_urlsafe(32)")
    elif any(c.isspace() for c in key):
        line = 2 if "\n" in key else 1
        yield Problem(str(ctx.inputs.key_file), line, "the key must be one line without spaces "
                                                      "(the launcher refuses it); keep only the key")
