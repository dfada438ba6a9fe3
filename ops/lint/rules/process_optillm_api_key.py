"""OPTILLM_API_KEY is set in the environment lint runs in.

Why: optillm 0.3.12 reads OPTILLM_API_KEY in get_config() and then switches to local
inference (it builds a transformers client instead of calling --base-url). A shell that
exports it will break any optillm started from it, and suggests someone is passing the key
the wrong way. The service never reads it from here, so this is a warning.

Fails:
    export OPTILLM_API_KEY=opx-...; opsctl lint

Passes:
    unset OPTILLM_API_KEY; opsctl lint

Fix: `unset OPTILLM_API_KEY` and remove it from shell profiles; the proxy key belongs in
/etc/optillm-proxy/api-key, delivered by LoadCredential=.
"""

from ops.from_launcher.layout import OPTILLM_VERSION
from ops.lint.finding import WARNING, Problem

ID = "process-optillm-api-key"
SEVERITY = WARNING


def check(ctx):
    if "OPTILLM_API_KEY" in ctx.process_env:
        yield Problem("<environment>", 0,
                      f"OPTILLM_API_KEY is set in this shell: optillm {OPTILLM_VERSION} would switch to "
                      "local inference; unset it (the key belongs in the key file)")
