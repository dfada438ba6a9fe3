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

ID = "proxy-plugins-unknown"
SEVERITY = ERROR


def check(ctx):
    setting = ctx.plugin_setting()
    if setting is None:
        return
    raw, path, line = setting
    text = raw.strip().lower()
    if text in ("", "none", "all"):
        return
    known = set(ctx.plugin_slugs)
    for slug in (s.strip() for s in text.split(",")):
        if slug in ("none", "all"):
            yield Problem(path, line, f"plugin setting {raw!r}: '{slug}' cannot be combined "
                                      "with plugin names; the launcher refuses to start")
        elif slug and slug not in known:
            yield Problem(path, line, f"unknown plugin {slug!r} (the launcher refuses to start);"
                                      f" known: {', '.join(sorted(known))}")
