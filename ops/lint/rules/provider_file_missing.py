"""The proxy plugin's provider file (~/.optillm/proxy_config.yaml of the service user) is missing.

Why: optillm 0.3.12's proxy plugin looks for ~/.optillm/proxy_config.yaml (or .yml) and,
when neither exists, uses its packaged example_config.yaml: OpenAI, Azure, Together and
Anyscale, called with ${OPENAI_API_KEY} (the LiteLLM key: the launcher sets it in its own
process from the upstream-key credential). Prompts and the key would go to public clouds.

Fails:
    /var/lib/optillm-proxy/.optillm/proxy_config.yaml does not exist

Passes:
    providers:
      - name: litellm
        base_url: http://127.0.0.1:4000/v1
        api_key: ${OPENAI_API_KEY}

Fix: re-run install.sh (it writes the provider file, root-owned 0644), or create it as above.
"""

from ops.from_launcher.layout import OPTILLM_VERSION
from ops.lint.finding import ERROR, Problem

ID = "provider-file-missing"
SEVERITY = ERROR


def check(ctx):
    ctx.provider_config
    path = ctx.inputs.proxy_config
    if any(p.kind == "missing" and p.input == "proxy-config" for p in ctx.load_problems):
        yml = path.with_suffix(".yml")
        if not yml.exists():
            yield Problem(str(path), 0, f"provider file missing: optillm {OPTILLM_VERSION} then uses its packaged "
                                        "example (public clouds); re-run install.sh or create it "
                                        "with a loopback LiteLLM provider")
