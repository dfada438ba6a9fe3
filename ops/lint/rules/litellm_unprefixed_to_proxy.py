"""A LiteLLM entry sends the proxy a model name without an approach prefix.

Why: the proxy only does work for prefixed names (moa-, bon-, plansearch-,
self_consistency-, ...). An unprefixed name passes straight through to LiteLLM under the same
name, adding a hop and, if that name routes to the proxy again, a loop.

Fails:
    - model_name: jerry-xl-smart
      litellm_params: {model: openai/jerry-xl, api_base: http://127.0.0.1:4020/v1}

Passes:
    - model_name: moa-jerry-xl
      litellm_params: {model: openai/moa-jerry-xl, api_base: http://127.0.0.1:4020/v1}

Fix: send `openai/<approach>-<base>` to the proxy, or route the entry to its backend directly.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._routing import PROXY, routes

ID = "litellm-unprefixed-to-proxy"
SEVERITY = ERROR


def check(ctx):
    for r in routes(ctx):
        if r.target == PROXY and not r.approaches:
            yield Problem(str(ctx.inputs.litellm_config), r.line,
                          f"{r.name}: sends {r.sent!r} to the proxy with no approach prefix; "
                          f"send e.g. 'openai/moa-{r.sent}' or route it to its backend")
