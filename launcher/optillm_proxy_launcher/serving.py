"""Serving: the socket systemd passes (socket activation), and a graceful drain on SIGTERM.

0.3.12's main() ends in Flask's `app.run()`, werkzeug's threaded development server: it binds its
own port, so a restart refuses connections, and its request threads are daemons, so SIGTERM kills
every request in flight. Patch point (patches.py): `server.app.run` is replaced by `serve()`,
which runs werkzeug's own ThreadedWSGIServer (its public `fd=` parameter) and:
- serves the socket of optillm-proxy.socket when systemd passes one (LISTEN_FDS/LISTEN_PID, sd_listen_fds
  protocol; the variables are taken out of the environment so children never see them), else binds
  --host/--port itself (the upgrade's validation unit, tests);
- on SIGTERM stops accepting (the listening socket stays with systemd: new connections wait in its
  backlog for the next process), lets requests in flight finish for up to DRAIN_SECONDS, tells
  systemd with STOPPING=1, STATUS= and EXTEND_TIMEOUT_USEC=, then returns so the process exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from optillm_proxy_launcher import settings
from optillm_proxy_launcher.settings import ConfigRefused

SD_LISTEN_FDS_START = 3
# systemd's stop timeout must outlast the drain; the margin covers the exit after it.
STOP_MARGIN_SECONDS = 10


def inherited_socket(environ: dict, pid: int, host: str, port: int) -> socket.socket | None:
    """The listening socket systemd passed (and LISTEN_* removed from `environ`), or None.

    Refuses (exit 78) what it cannot serve faithfully: several sockets, a socket that is not a
    listening TCP socket, or one bound elsewhere than the --host/--port the unit names.
    """
    fds, listen_pid = environ.pop("LISTEN_FDS", None), environ.pop("LISTEN_PID", None)
    environ.pop("LISTEN_FDNAMES", None)
    if fds is None or listen_pid != str(pid):
        return None  # not socket-activated, or the variables were meant for another process
    settings.check_socket_count(fds)
    fd = SD_LISTEN_FDS_START
    try:
        sock = socket.socket(fileno=os.dup(fd))  # family and type read from the fd itself
    except OSError as exc:
        raise ConfigRefused(f"the socket systemd passed (fd {fd}) is unusable: {exc.strerror}") from None
    os.close(fd)  # our dup is the one served; systemd keeps its own
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM or not listening:
        sock.close()
        raise ConfigRefused("the socket systemd passed is not a listening TCP socket: optillm-proxy.socket needs "
                            "ListenStream=127.0.0.1:PORT")
    try:
        settings.check_socket_address(sock.getsockname()[:2], host, port)
    except ConfigRefused:
        sock.close()
        raise
    return sock


class DrainingServer:
    """werkzeug's ThreadedWSGIServer, counting connections in flight so a stop can wait for them."""

    def __init__(self, app, host: str, port: int, sock: socket.socket | None) -> None:
        from werkzeug.serving import ThreadedWSGIServer

        outer = self

        class Server(ThreadedWSGIServer):
            def process_request(self, request, client_address):
                outer._started()  # counted on the accepting thread: no window before the thread runs
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    outer._done()
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    outer._done()

        self._busy = 0
        self._idle = threading.Condition()
        # werkzeug's fd= takes the family from `host`: the socket's own address keeps them equal.
        self.server = Server(host, port, app, fd=sock.fileno() if sock is not None else None)
        if sock is not None:
            sock.close()  # werkzeug serves its own dup (socket.fromfd)

    def _started(self) -> None:
        with self._idle:
            self._busy += 1

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    @property
    def busy(self) -> int:
        with self._idle:
            return self._busy

    def wait_idle(self, seconds: float) -> int:
        """Wait until no connection is in flight or `seconds` passed; returns how many are left."""
        end = time.monotonic() + seconds
        with self._idle:
            while self._busy and (left := end - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._busy


def make_run(notifier, drain_seconds: float, listen: socket.socket | None, stop_supervisor: threading.Event):
    """The replacement for optillm.server.app.run(host=..., port=...)."""

    def run(host=None, port=None, **_flask_options) -> None:
        draining = DrainingServer(_app(), host, int(port), listen)
        server = draining.server
        server.log_startup()
        stopping = threading.Event()

        def on_stop(signum, frame):
            if stopping.is_set():
                return
            stopping.set()
            # shutdown() waits for serve_forever to return: never call it on the serving thread.
            threading.Thread(target=server.shutdown, name="stop-accepting", daemon=True).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        server.serve_forever()  # returns after shutdown(); closes only our copy of the socket
        stop_supervisor.set()
        in_flight = draining.busy
        extend_usec = int((drain_seconds + STOP_MARGIN_SECONDS) * 1_000_000)
        notifier.send(f"STOPPING=1\nSTATUS=draining: {in_flight} request(s) in flight, up to {drain_seconds:g} s "
                      f"(DRAIN_SECONDS)\nEXTEND_TIMEOUT_USEC={extend_usec}")
        print(f"optillm-proxy-launcher: stopping: no new connections; draining {in_flight} request(s) in flight "
              f"for up to {drain_seconds:g} s", file=sys.stderr, flush=True)
        left = draining.wait_idle(drain_seconds)
        if left:
            print(f"optillm-proxy-launcher: drain ended at DRAIN_SECONDS={drain_seconds:g} with {left} request(s) "
                  "still in flight; they are cut", file=sys.stderr, flush=True)
        else:
            print("optillm-proxy-launcher: drained: every request in flight was answered", file=sys.stderr,
                  flush=True)

    def _app():
        import optillm.server

        return optillm.server.app

    return run
