"""ExecStart sets --approach proxy.

Why: measured on 0.3.12: with --approach proxy, `moa-jerry-xl` becomes `proxy-moa-jerry-xl`,
only the first approach (proxy) runs, and no strategy ever fans out, while every request
still answers 200. The gateway silently stops doing its job.

Fails:
    ExecStart=... --approach proxy ...

Passes:
    ExecStart=... (no --approach: the model-name prefix picks the strategy)

Fix: remove --approach from ExecStart.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._command import optillm_command

ID = "approach-proxy"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is not None and es.command.flags.get("--approach") == "proxy":
        d = es.directive
        yield Problem(d.path, d.line, "--approach proxy makes 0.3.12 skip every strategy "
                                      "(moa-... runs as proxy only); remove --approach")
