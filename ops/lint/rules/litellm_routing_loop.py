"""LiteLLM and the proxy route a model name back to itself.

Why: the proxy sends the base name (jerry-xl for moa-jerry-xl) back to LiteLLM. If LiteLLM
routes that base name to the proxy again, directly or through other entries, each request
multiplies (MoA fans out 3 calls per hop) until timeouts: a cost and outage amplifier.

Fails:
    - model_name: jerry-xl
      litellm_params: {model: openai/moa-jerry-xl, api_base: http://127.0.0.1:4020/v1}

Passes:
    - model_name: jerry-xl
      litellm_params: {model: openai/jerry-xl, api_base: http://10.0.0.5:8000/v1}
    - model_name: moa-jerry-xl
      litellm_params: {model: openai/moa-jerry-xl, api_base: http://127.0.0.1:4020/v1}

Fix: the base model must route to a real backend, never to the proxy; only prefixed names
go to the proxy.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._routing import cycles, describe, routes

ID = "litellm-routing-loop"
SEVERITY = ERROR


def check(ctx):
    for cycle in cycles(routes(ctx)):
        unloaded = [r for r in cycle if r.approaches and r.next_name == r.sent]
        if unloaded:
            # The prefix is a plugin the proxy does not load: it passes the name back as is.
            fix = (f"enable plugin {unloaded[0].approaches[0]!r} (PROXY_PLUGINS) or drop "
                   f"{unloaded[0].name!r}")
        else:
            fix = f"route {cycle[-1].next_name!r} to a real backend, not to the proxy"
        yield Problem(str(ctx.inputs.litellm_config), cycle[0].line,
                      f"routing loop: {describe(cycle)}; {fix}")
