"""The env file does not give OPENAI_API_KEY a value.

Why: optillm uses OPENAI_API_KEY to call LiteLLM (and the provider file interpolates it).
Without it every upstream call fails with 401, or the openai client refuses to start.

Fails:
    OPENAI_API_KEY=

Passes:
    OPENAI_API_KEY=sk-litellm-virtual-key

Fix: set OPENAI_API_KEY in /etc/optillm-proxy/env to the LiteLLM key this proxy should use,
then `systemctl restart optillm-proxy`.
"""

from ops.lint.finding import ERROR, Problem

ID = "openai-key-missing"
SEVERITY = ERROR


def check(ctx):
    if ctx.env is None:
        return
    a = ctx.env.get("OPENAI_API_KEY")
    path = str(ctx.inputs.env_file)
    if a is None:
        yield Problem(path, 1, "OPENAI_API_KEY is not set; add OPENAI_API_KEY=<LiteLLM key>")
    elif not a.value.strip():
        yield Problem(path, a.line, "OPENAI_API_KEY is empty; set it to the LiteLLM key")
