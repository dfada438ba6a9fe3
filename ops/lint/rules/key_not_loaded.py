"""The unit gives the proxy no key (no LoadCredential=api-key:...).

Why: the launcher reads the proxy key from $CREDENTIALS_DIRECTORY/api-key; without
LoadCredential= it refuses to start (exit 78). A plain `optillm` ExecStart without a key
answers anyone on the machine, and forwards their `sk-` bearers upstream.

Fails:
    [Service]
    ExecStart=... optillm-proxy-launcher.py ...      # and no LoadCredential=

Passes:
    [Service]
    LoadCredential=api-key:/etc/optillm-proxy/api-key

Fix: add `LoadCredential=api-key:/etc/optillm-proxy/api-key` to [Service].
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command

ID = "key-not-loaded"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None or "--optillm-api-key" in es.command.flags:
        return  # key-on-command-line covers a literal key
    for key in ("LoadCredential", "LoadCredentialEncrypted", "SetCredential",
                "SetCredentialEncrypted"):
        for d in ctx.unit.effective("Service", key):
            if d.value.split(":", 1)[0].strip() == "api-key":
                return
    d = es.directive
    yield Problem(d.path, d.line, "no LoadCredential=api-key:... in [Service]: the proxy gets "
                                  "no key; add LoadCredential=api-key:/etc/optillm-proxy/api-key")
