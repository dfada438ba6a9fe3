"""optillm's --host is missing from ExecStart or is not a loopback address.

Why: the proxy must only be reachable on this machine (LiteLLM calls it on 127.0.0.1:4020).
`--host 0.0.0.0` exposes every strategy, and whatever plugins are loaded, to the network.
Leaving it out relies on a default the next optillm release may change.

Fails:
    ExecStart=... optillm-proxy-launcher.py --host 0.0.0.0 --port 4020 ...

Passes:
    ExecStart=... optillm-proxy-launcher.py --host 127.0.0.1 --port 4020 ...

Fix: `--host 127.0.0.1` on ExecStart.
"""

from ops.lint.finding import ERROR, Problem
from ops.lint.netaddr import is_loopback_host
from ops.lint.rules._command import optillm_command

ID = "host-not-loopback"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    host = es.command.flags.get("--host")
    d = es.directive
    if host is None:
        yield Problem(d.path, d.line, "ExecStart has no --host; add --host 127.0.0.1")
    elif not is_loopback_host(host):
        yield Problem(d.path, d.line, f"--host {host} is not loopback: the proxy would be "
                                      "reachable from the network; use --host 127.0.0.1")
