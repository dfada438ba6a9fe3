"""A line of the env file that systemd would reject or read differently than it looks.

Why: EnvironmentFile= is not a shell script and not a dotenv file. systemd silently drops
lines without `=` and names like `export KEY`, keeps `# comments` after a value as part of
the value, glues text after a closing quote onto the value, lets an unclosed quote swallow
the following lines, and keeps only the last of two assignments. The service then runs with
a setting nobody wrote.

Fails:
    export PROXY_PLUGINS=json             # dropped: invalid name
    PROXY_PLUGINS=none  # default          # value is "none  # default"

Passes:
    # plugins the launcher loads
    PROXY_PLUGINS=json
    UPSTREAM_RETRIES=1

Fix: one NAME=value per line, comments on their own lines, quotes closed on the same line,
no `export`.
"""

from ops.lint.finding import ERROR, Problem

ID = "env-syntax"
SEVERITY = ERROR


def check(ctx):
    if ctx.env is None:
        return
    for line, message in ctx.env.problems:
        yield Problem(str(ctx.inputs.env_file), line, message)
