"""The unit has no EnvironmentFile=, so the env file never reaches the service.

Why: PROXY_PLUGINS, PROXY_APPROACHES, PROXY_RECORDS, PROXY_USAGE and the request bounds live in
/etc/optillm-proxy/env (no secret: both keys are credentials). Without EnvironmentFile= each
silently falls back to the launcher's default, whatever the file says. A leading `-`
(EnvironmentFile=-/etc/...) also hides a missing file.

Fails:
    [Service]
    ExecStart=...                     # and no EnvironmentFile=

Passes:
    [Service]
    EnvironmentFile=/etc/optillm-proxy/env

Fix: add `EnvironmentFile=/etc/optillm-proxy/env` to [Service] (no leading `-`).
"""

from ops.from_launcher.layout import DEFAULT
from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command

ID = "env-file-not-loaded"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    found = ctx.unit.effective("Service", "EnvironmentFile")
    if not found:
        d = es.directive
        yield Problem(d.path, d.line, "no EnvironmentFile= in [Service]: PROXY_PLUGINS and the "
                                      "request settings never reach the launcher; add "
                                      f"EnvironmentFile={DEFAULT.env_file}")
    for d in found:
        if d.value.startswith("-"):
            yield Problem(d.path, d.line, f"EnvironmentFile={d.value}: the leading '-' lets the "
                                          "service start without its settings when the file "
                                          "is missing; remove the '-'")
