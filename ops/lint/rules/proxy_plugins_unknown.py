"""PROXY_PLUGINS (or the launcher's --plugins) is not `none`, `all` or a list of known slugs.

Why: the launcher refuses to start (exit 78) on an unknown plugin name or on `none`/`all`
mixed with names; a typo therefore takes the service down at the next restart.

Fails:
    PROXY_PLUGINS=readurl,majority_voting
    PROXY_PLUGINS=all,json

Passes:
    PROXY_PLUGINS=none
    PROXY_PLUGINS=readurls,majority_voting

Fix: use the slugs listed by `opsctl lint --explain plugin-not-in-profile` / the runtime's
libexec/plugins.json.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "proxy-plugins-unknown"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    es = ctx.exec_start
    if es is not None and es.command.launcher_error:  # the launcher's own --plugins, without a value
        yield Problem(es.directive.path, es.directive.line, REFUSES + es.command.launcher_error)
    setting = ctx.plugin_setting()
    refused = ctx.plugins_refused()
    if setting is not None and refused:
        yield Problem(setting[1], setting[2], REFUSES + refused)
