"""An input file exists but cannot be read or parsed.

Why: a file lint cannot read is one systemd or optillm may not read either (a YAML syntax
error makes 0.3.12's proxy plugin fall back to a minimal config; a non-UTF-8 env file line is
dropped by systemd). Lint reports it instead of guessing.

Fails:
    providers:
      - name: litellm
        base_url: http://127.0.0.1:4000/v1
       api_key: ${OPENAI_API_KEY}        # bad indentation

Passes:
    providers:
      - name: litellm
        base_url: http://127.0.0.1:4000/v1
        api_key: ${OPENAI_API_KEY}

Fix: correct the syntax at the line given; if the reason is "permission denied", run lint as
root (sudo opsctl lint): the secrets are root-only on purpose.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.rules.file_missing import _touch_inputs

ID = "file-unreadable"
SEVERITY = ERROR


def check(ctx):
    _touch_inputs(ctx)
    for p in ctx.load_problems:
        if p.kind == "unreadable":
            yield Problem(p.path, p.line, f"{p.input}: {p.message}")
