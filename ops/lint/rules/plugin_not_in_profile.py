"""An enabled plugin cannot be imported by the installed runtime's profile.

Why: the lean profile leaves out torch, transformers, spacy and the other packages only
plugins need. The launcher checks the runtime's libexec/plugins.json and refuses to start
(exit 78) when PROXY_PLUGINS names a plugin the profile cannot import, so the service
would fail at its next restart. `all` needs the full profile, which some host Pythons cannot
have (the table's "pythons" section says why, e.g. none for 3.13): this rule is the launcher's
own check (settings.check_profile), so it says the same.

Fails:
    profile lean, PROXY_PLUGINS=readurls,executecode

Passes:
    profile lean, PROXY_PLUGINS=majority_voting (lean-capable), or profile full

Fix: set PROXY_PLUGINS to plugins of the installed profile (the message lists them), or,
where the host's Python has one, install the full profile: `sudo ./install.sh --profile full`.
"""

from ops.lint.finding import ERROR, Problem
from optillm_proxy_launcher import settings

ID = "plugin-not-in-profile"
SEVERITY = ERROR


def check(ctx):
    rt = ctx.runtime
    enabled = ctx.enabled_plugins()
    if rt is None or enabled is None or not enabled[1]:
        return
    raw, path, line = ctx.plugin_setting()
    if rt.plugins is None:
        yield Problem(str(rt.plugins_path), 0, f"plugin setting {raw!r} but the runtime has no "
                                               "plugin table: the launcher refuses; reinstall")
        return
    profile = rt.profile
    if profile is None:
        return  # file-missing / file-unreadable report the manifest
    table = rt.plugins
    slugs = sorted(table) if "*" in enabled[1] else sorted(s for s in enabled[1] if s in table)
    try:  # the launcher's own check: the same refusal, the same words
        settings.check_profile(slugs, table, profile, rt.python, rt.pythons)
    except settings.ConfigRefused as exc:
        yield Problem(path, line, f"{exc} (the launcher refuses to start)")
