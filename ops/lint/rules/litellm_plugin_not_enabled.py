"""A LiteLLM entry routes a plugin prefix that the proxy does not load.

Why: the launcher loads only the plugins named in PROXY_PLUGINS (default none). optillm
0.3.12 does not recognise an unloaded plugin's slug as an approach, so `readurls-jerry-xl`
is passed on as a model name nobody serves: the request fails, or loops.

Fails:
    PROXY_PLUGINS=none
    - model_name: readurls-jerry-xl
      litellm_params: {model: openai/readurls-jerry-xl, api_base: http://127.0.0.1:4020/v1}

Passes:
    PROXY_PLUGINS=readurls      (and a profile that can import it)

Fix: add the plugin to PROXY_PLUGINS in /etc/optillm-proxy/env (weigh its risk: see
`plugins.json`), or remove the entry.
"""

from ops.lint.finding import WARNING, Problem
from ops.lint.rules._routing import PROXY, routes

ID = "litellm-plugin-not-enabled"
SEVERITY = WARNING


def check(ctx):
    enabled = ctx.enabled_plugins()
    if enabled is None:
        return
    raw, slugs = enabled
    if "*" in slugs:
        return
    plugin_slugs = set(ctx.plugin_slugs)
    for r in routes(ctx):
        if r.target != PROXY:
            continue
        for approach in r.approaches:
            if approach in plugin_slugs and approach not in slugs:
                yield Problem(str(ctx.inputs.litellm_config), r.line,
                              f"{r.name}: routes plugin {approach!r} but PROXY_PLUGINS="
                              f"{raw or 'none'}; add {approach} to PROXY_PLUGINS or drop the entry")
