"""A line of the unit file or a drop-in that systemd ignores.

Why: systemd skips, with only a log line, assignments outside a [Section], lines without
`=` and broken section headers. The hardening or ExecStart you read is then not what runs.

Fails:
    ExecStart=/opt/optillm-proxy/current/bin/python ...    # before any [Service]
    [Service
    NoNewPrivileges yes

Passes:
    [Service]
    NoNewPrivileges=yes

Fix: fix the line shown; check with `systemd-analyze verify optillm-proxy.service`.
"""

from ops.lint.finding import ERROR, Problem

ID = "unit-syntax"
SEVERITY = ERROR


def check(ctx):
    if ctx.unit is None:
        return
    for path, line, message in ctx.unit.problems:
        yield Problem(path, line, message)
