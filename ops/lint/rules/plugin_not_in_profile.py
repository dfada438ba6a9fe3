"""An enabled plugin cannot be imported by the installed runtime's profile (or the runtime's
plugin table or manifest, which say so, cannot be read).

Why: the lean profile leaves out torch, transformers, spacy and the other packages only
plugins need. The launcher checks the runtime's libexec/plugins.json and refuses to start
(exit 78) when PROXY_PLUGINS names a plugin the profile cannot import, so the service
would fail at its next restart. `all` needs the full profile, which some host Pythons cannot
have (the table's "pythons" section says why: none on 3.13), and the message says so there. It
refuses as well when the plugin table is missing or empty, or the manifest
(optillm-proxy-runtime.json) is unreadable or names no profile. Lint reads both with the
launcher's own functions, so the message is its own.

Fails:
    profile lean, PROXY_PLUGINS=readurls,executecode

Passes:
    profile lean, PROXY_PLUGINS=majority_voting (lean-capable), or profile full

Fix: set PROXY_PLUGINS to plugins of the installed profile (the message lists them), or,
where the host's Python has one, install the full profile: `sudo ./install.sh --profile full`;
for an unreadable table or manifest, rebuild the runtime (`sudo ./install.sh`).
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES, refusal

ID = "plugin-not-in-profile"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    rt = ctx.runtime
    if rt is None:
        return
    # The launcher reads its plugin table and the manifest's profile at every start.
    if rt.plugins_refused:
        yield Problem(str(rt.plugins_path), 0, REFUSES + rt.plugins_refused)
    if rt.profile_refused:
        yield Problem(str(rt.manifest_path), 1, REFUSES + rt.profile_refused)
    enabled = ctx.enabled_plugins()
    if enabled is None or not enabled[1] or rt.plugins is None or rt.profile is None:
        return
    raw, path, line = ctx.plugin_setting()
    parsed = settings.parse_plugin_setting(raw, rt.plugins)  # in the setting's order, as the launcher has it
    message = refusal(settings.check_profile, parsed, rt.plugins, rt.profile, rt.python, rt.pythons)
    if message:
        yield Problem(path, line, message)
