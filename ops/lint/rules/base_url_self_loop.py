"""--base-url points at optillm's own --port.

Why: optillm would send every upstream call to itself; each request recurses until threads
or the client time out.

Fails:
    ExecStart=... --port 4020 --base-url http://127.0.0.1:4020/v1 ...

Passes:
    ExecStart=... --port 4020 --base-url http://127.0.0.1:4000/v1 ...

Fix: --base-url is LiteLLM (port 4000), --port is the proxy (4020).
"""

from ops.from_launcher.layout import UPSTREAM_PORT
from ops.lint.finding import ERROR, Problem
from ops.lint.netaddr import is_loopback_host, split_url
from ops.lint.rules._command import optillm_command

ID = "base-url-self-loop"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    url = es.command.flags.get("--base-url")
    if not url:
        return
    _, host, port = split_url(url)
    if is_loopback_host(host) and port == ctx.proxy_port:
        d = es.directive
        yield Problem(d.path, d.line, f"--base-url {url} is optillm's own port {port}: every "
                                      f"call would loop back; point it at LiteLLM (port {UPSTREAM_PORT})")
