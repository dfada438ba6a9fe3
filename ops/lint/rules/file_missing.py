"""An input file lint was pointed at does not exist.

Why: the unit, env file and key file are what systemd needs to start the proxy; a runtime or
LiteLLM config given on the command line was meant to be checked. Nothing can be said about a
file that is not there, and the service will not start without it. (A missing LiteLLM key file
is openai-key-missing, a missing provider file provider-file-missing: each says what it breaks.)

Fails:
    opsctl lint --env-file /etc/optillm-proxy/env    # no such file

Passes:
    the file exists (install.sh creates the env file from env.example and the key file).

Fix: run install.sh (it creates what is missing and never overwrites what exists), or point
lint at the right path (--unit, --env-file, --key-file, --litellm-config, --venv).
"""

from ops.lint.finding import ERROR, Problem

ID = "file-missing"
SEVERITY = ERROR


def check(ctx):
    _touch_inputs(ctx)
    for p in ctx.load_problems:
        # The provider file and the LiteLLM key have their own rules (provider-file-missing,
        # openai-key-missing): each absence has a specific effect, said there.
        if p.kind == "missing" and p.input not in ("proxy-config", "upstream-key-file"):
            yield Problem(p.path, p.line, f"{p.input}: {p.message}")


def _touch_inputs(ctx):
    """Load every input so its load problems are known, whatever rule order is."""
    (ctx.unit, ctx.env, ctx.key_text, ctx.upstream_key_text, ctx.provider_config,
     ctx.litellm_config, ctx.runtime, ctx.socket_unit)
