"""ExecStart sets --approach to one strategy.

Why: with a fixed --approach every request uses that approach and the model-name prefixes
LiteLLM sends (moa-, bon-, plansearch-, self_consistency-) no longer choose the strategy.
Sometimes intended, usually not.

Fails:
    ExecStart=... --approach moa ...

Passes:
    ExecStart=... (no --approach)

Fix: remove --approach unless this proxy should apply one strategy to everything.
"""

from ops.lint.finding import WARNING, Problem
from ops.lint.rules._command import optillm_command

ID = "approach-fixed"
SEVERITY = WARNING


def check(ctx):
    es = optillm_command(ctx)
    if es is None or "--approach" not in es.command.flags:
        return
    approach = es.command.flags["--approach"]
    if approach not in ("proxy", "auto"):
        d = es.directive
        yield Problem(d.path, d.line, f"--approach {approach} disables prefix selection: every "
                                      "request runs it; remove --approach to route by prefix")
