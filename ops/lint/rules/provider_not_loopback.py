"""A provider in the proxy plugin's provider file is not on loopback.

Why: the proxy plugin sends requests, with the interpolated api_key, to each provider's
base_url. Anything but the local LiteLLM sends prompts and the LiteLLM key (${OPENAI_API_KEY},
which the launcher sets in-process from the upstream-key credential) off the machine, past
LiteLLM's budgets and logging.

Fails:
    providers:
      - name: openai
        base_url: https://api.openai.com/v1
        api_key: ${OPENAI_API_KEY}

Passes:
    providers:
      - name: litellm
        base_url: http://127.0.0.1:4000/v1
        api_key: ${OPENAI_API_KEY}

Fix: keep only the loopback LiteLLM provider; route other backends through LiteLLM.
"""

import re

from ops.from_launcher.layout import OPTILLM_VERSION, UPSTREAM_URL
from ops.lint.finding import ERROR, Problem
from ops.lint.netaddr import is_loopback_url

ID = "provider-not-loopback"
SEVERITY = ERROR
_VAR = re.compile(r"\$\{([^}]+)\}")


def _interpolate(value: str, env: dict) -> tuple[str, list[str]]:
    """As 0.3.12's ProxyConfig does, with the service's env file as the environment."""
    unset: list[str] = []

    def repl(m):
        expr = m.group(1)
        if ":-" in expr:
            name, default = expr.split(":-", 1)
            return env.get(name.strip(), default)
        if expr.strip() in env:
            return env[expr.strip()]
        unset.append(expr.strip())
        return m.group(0)

    return _VAR.sub(repl, value), unset


def check(ctx):
    cfg = ctx.provider_config
    if cfg is None:
        return
    path = str(ctx.inputs.proxy_config)
    providers = cfg.get("providers")
    if providers is None:
        return
    if not isinstance(providers, list):
        yield Problem(path, cfg.line_of("providers"), "providers must be a list")
        return
    env = ctx.service_environment
    for i, provider in enumerate(providers):
        line = providers.line_of(i)
        if not isinstance(provider, dict):
            yield Problem(path, line, f"providers[{i}] must be a mapping with base_url")
            continue
        name = provider.get("name", f"providers[{i}]")
        url = provider.get("base_url")
        line = provider.line_of("base_url")
        if not isinstance(url, str) or not url.strip():
            yield Problem(path, line, f"provider {name}: no base_url; optillm {OPTILLM_VERSION} rejects the file "
                                      f"and falls back; set base_url: {UPSTREAM_URL}")
            continue
        resolved, unset = _interpolate(url, env)
        if unset:
            yield Problem(path, line, f"provider {name}: base_url depends on ${{{unset[0]}}}, "
                                      "which the env file does not set; write the URL literally")
        elif not is_loopback_url(resolved):
            yield Problem(path, line, f"provider {name}: base_url {resolved} is not on loopback;"
                                      f" route it through the local LiteLLM ({UPSTREAM_URL})")
