"""optillm's --model carries an approach prefix (moa-, bon-, ...).

Why: the loop-avoidance invariant is that the proxy only ever sends base model names
upstream. A prefixed default model can be sent to LiteLLM, which routes prefixed names back
to the proxy: a loop.

Fails:
    ExecStart=... --model moa-jerry-xl

Passes:
    ExecStart=... --model jerry-xl

Fix: `--model jerry-xl` (a base name LiteLLM routes to a real backend).
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.optillm_facts import split_approaches
from ops.lint.rules._command import optillm_command

ID = "model-approach-prefix"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    model = es.command.flags.get("--model")
    if not model:
        return
    approaches, base = split_approaches(model, ctx.plugin_slugs)
    if approaches:
        d = es.directive
        yield Problem(d.path, d.line, f"--model {model} starts with approach "
                                      f"{'-'.join(approaches)!r}; use the base name "
                                      f"{base or 'jerry-xl'!r}")
