"""The proxy key in the key file is shorter than 32 characters, or not a single line.

Why: the key is the only thing between any local process and the proxy (and, through it,
the LiteLLM budget). install.sh generates `opx-` + 43 base64url characters (32 random bytes);
a short hand-made key can be guessed (lint's own bar: the launcher accepts a short key). The
launcher refuses to start (exit 78) with an empty key or one with spaces or a second line
(usually a paste accident); lint calls its own check (settings.check_key_text) for those, so the
message is the launcher's.

Fails:
    changeme

Passes:
    opx-Zq3v0m2T4sJ7x1dY8kP5wR9nB6cL2hF0aE4uG7iK1oM

Fix: `sudo opsctl key rotate` (a new key written 0600, checked by the launcher, one reload), then
give LiteLLM the new key (RUNBOOK.md#rotate-the-proxy-key).
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "key-too-short"
SEVERITY = ERROR
MIN_LENGTH = 32


def check(ctx):
    text = ctx.key_text
    if text is None:
        return
    path = ctx.inputs.key_file
    try:
        key = settings.check_key_text(text, path, settings.KEY_FILE_HINT, settings.PROXY_KEY_WHAT)
    except settings.ConfigRefused as exc:
        line = 2 if "\n" in text.strip() else 1
        yield Problem(str(path), line, REFUSES + str(exc))
        return
    if len(key) < MIN_LENGTH:
        yield Problem(str(path), 1, f"proxy key is {len(key)} characters, needs at least {MIN_LENGTH}; "
                                    "generate one: opx- + secrets.token_urlsafe(32)")
