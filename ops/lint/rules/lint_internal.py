"""A lint rule itself failed (a bug in opsctl lint, not in your configuration).

Why: one broken rule must not hide what the others found, nor end in a traceback.

Fails:
    <lint>:0: lint-internal error: rule X crashed (...)

Passes:
    no rule crashes.

Fix: report it with the input that triggers it; the other findings are still valid.
"""

from ops.lint.finding import ERROR

ID = "lint-internal"
SEVERITY = ERROR


def check(ctx):
    return ()
