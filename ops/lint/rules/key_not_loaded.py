"""The unit does not load both keys (LoadCredential=api-key:... and upstream-key:...).

Why: the launcher reads the proxy key from $CREDENTIALS_DIRECTORY/api-key and the LiteLLM key
from $CREDENTIALS_DIRECTORY/upstream-key; without the LoadCredential= for either it refuses to
start (exit 78). A plain `optillm` ExecStart without a key answers anyone on the machine, and
forwards their `sk-` bearers upstream.

Fails:
    [Service]
    ExecStart=... optillm-proxy-launcher.py ...      # and no LoadCredential=
    LoadCredential=api-key:/etc/optillm-proxy/api-key   # alone: no upstream-key

Passes:
    [Service]
    LoadCredential=api-key:/etc/optillm-proxy/api-key
    LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key

Fix: add `LoadCredential=api-key:/etc/optillm-proxy/api-key` and
`LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key` to [Service] (as the shipped unit
has them).
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command
from ops.lint.rules._launcher import REFUSES

ID = "key-not-loaded"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable
_DIRECTIVES = ("LoadCredential", "LoadCredentialEncrypted", "SetCredential", "SetCredentialEncrypted")


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    loaded = {d.value.split(":", 1)[0].strip()
              for key in _DIRECTIVES for d in ctx.unit.effective("Service", key)}
    d = es.directive
    launcher = es.command.form == "launcher"
    # key-on-command-line covers a literal proxy key.
    if settings.CREDENTIAL_NAME not in loaded and "--optillm-api-key" not in es.command.flags:
        if launcher:
            yield Problem(d.path, d.line, REFUSES + str(settings.credential_not_loaded(
                settings.CREDENTIAL_NAME, settings.KEY_FILE_HINT, settings.PROXY_KEY_WHAT)))
        else:
            yield Problem(d.path, d.line, f"no LoadCredential={settings.CREDENTIAL_NAME}:... in [Service]: "
                                          "optillm gets no key and answers anyone; use the launcher with "
                                          f"LoadCredential={settings.CREDENTIAL_NAME}:{settings.KEY_FILE_HINT}")
    if settings.UPSTREAM_CREDENTIAL_NAME not in loaded and launcher:
        yield Problem(d.path, d.line, REFUSES + str(settings.credential_not_loaded(
            settings.UPSTREAM_CREDENTIAL_NAME, settings.UPSTREAM_KEY_FILE_HINT, settings.UPSTREAM_KEY_WHAT)))
