"""optillm-proxy.socket does not hand the launcher exactly one socket on ExecStart's --host/--port.

Why: the unit is socket-activated: systemd holds the listening socket (so a restart refuses no
connection) and passes it at start. The launcher serves only what it can serve faithfully and
refuses to start (exit 78) when systemd passes more than one socket, or one bound to another
address than the --host/--port optillm believes it serves (a bare port in ListenStream= is IPv6
dual-stack, '::'). Lint reads the socket unit's ListenStream= and calls the launcher's own
checks (settings.check_socket_count, check_socket_address), so the message is the launcher's.

Fails:
    ListenStream=4020                    (the unit says --host 127.0.0.1 --port 4020)
    ListenStream=127.0.0.1:4021
    ListenStream=127.0.0.1:4020 and a second ListenStream=

Passes:
    ListenStream=127.0.0.1:4020          (the unit says --host 127.0.0.1 --port 4020)

Fix: one `ListenStream=HOST:PORT` in optillm-proxy.socket, the same address as ExecStart's
--host and --port (install.sh writes them so), then `systemctl daemon-reload` and restart the
socket and the service.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.netaddr import listen_stream_address
from ops.lint.rules._command import optillm_command
from ops.lint.rules._launcher import refusal

ID = "socket-address"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    unit = ctx.socket_unit
    es = optillm_command(ctx)
    if unit is None or es is None or es.command.form != "launcher":
        return
    listens = unit.effective("Socket", "ListenStream")
    where = listens[-1] if listens else None
    path, line = (where.path, where.line) if where else (unit.files[0], 0)
    message = refusal(settings.check_socket_count, str(len(listens)))
    if message:
        yield Problem(path, line, message)
        return
    bound = listen_stream_address(where.value)
    try:
        host, port = settings.listen_address(es.command.args)
    except settings.ConfigRefused:
        return  # exec-start reports the port
    if bound is not None:
        message = refusal(settings.check_socket_address, bound, host, port)
        if message:
            yield Problem(path, line, message)
