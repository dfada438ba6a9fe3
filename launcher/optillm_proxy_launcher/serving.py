"""Serving: waitress on the socket systemd passes (socket activation), and a graceful drain on SIGTERM.

0.3.12's main() ends in Flask's `app.run()`, werkzeug's development server (one unbounded thread
per connection, no read timeout). Patch point (patches.py): `server.app.run` is replaced by the
`run()` made here, which serves optillm's app (behind admission.py) with waitress:
- waitress's event loop reads each request whole (large bodies spool to a temporary file) and
  only then hands it to a pool of SERVER_THREADS threads; a connection that sends nothing for
  CLIENT_TIMEOUT_SECONDS (unfinished request, idle keep-alive) is closed; past CONNECTION_LIMIT
  open connections it stops accepting and new ones wait in the socket's backlog;
- it serves the socket of optillm-proxy.socket when systemd passes one (LISTEN_FDS/LISTEN_PID,
  sd_listen_fds protocol; the variables are taken out of the environment so children never see
  them), else binds --host/--port itself (the upgrade's validation unit, tests);
- on SIGTERM it stops accepting (only our copy of the listening socket is closed, never
  shutdown(2): systemd keeps it and new connections wait in its backlog for the next process),
  closes idle connections, lets requests in flight finish for up to DRAIN_SECONDS, tells systemd
  with STOPPING=1, STATUS= and EXTEND_TIMEOUT_USEC=, then returns so the process exits 0.
waitress has no graceful stop of its own: the drain below is built from its pieces (the listener
is a wasyncore dispatcher, connections are HTTPChannels in the socket map, the pool is a
ThreadedTaskDispatcher).
"""

from __future__ import annotations

import logging
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
# waitress closes timed-out connections when it next checks; this bounds the wait past the timeout.
CLEANUP_INTERVAL_SECONDS = 5
# The event loop's poll timeout: how soon a stop is noticed and the cleanup runs.
LOOP_SECONDS = 0.5
# Request headers beyond this are refused (431); clients send a few hundred bytes.
MAX_HEADER_BYTES = 64 * 1024
# Request bodies past this wait for their thread in a temporary file, not in memory: a full
# CONNECTION_LIMIT of queued requests holds at most this much each.
BODY_IN_MEMORY_BYTES = 64 * 1024
# waitress re-calls listen() on the socket it serves: the same backlog as optillm-proxy.socket's
# Backlog=, so serving it does not change it.
SOCKET_BACKLOG = 1024


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


def server_options(request: settings.RequestSettings) -> dict:
    """waitress's adjustments, from the env-file bounds (docs/serving.md is generated from this)."""
    return {
        "threads": request.threads,
        "connection_limit": request.connection_limit,
        "channel_timeout": request.client_timeout,
        "cleanup_interval": CLEANUP_INTERVAL_SECONDS,
        "asyncore_loop_timeout": LOOP_SECONDS,
        "backlog": SOCKET_BACKLOG,
        # Past the gate's MAX_REQUEST_BYTES, so the gate answers 413 in OpenAI's error shape; only a
        # body past this margin too is cut by waitress itself (413, its plain text).
        "max_request_body_size": request.max_request_bytes + 64 * 1024,
        "max_request_header_size": MAX_HEADER_BYTES,
        "inbuf_overflow": BODY_IN_MEMORY_BYTES,
        "ident": None,  # no Server: header naming the software
        "expose_tracebacks": False,
        # Nobody is a trusted proxy: X-Forwarded-* and Forwarded headers are removed, not believed.
        "clear_untrusted_proxy_headers": True,
        "log_untrusted_proxy_headers": False,
    }


# A connection accepted but silent so far may have its request on the way: during a drain it counts
# as in flight this long (then it is an idle connection like any other).
FRESH_SECONDS = 2.0


def _in_flight(ch, now: float) -> bool:
    if ch.requests or ch.request is not None or ch.total_outbufs_len:
        return True  # a request being read, queued, run or answered
    return ch.last_activity == ch.creation_time and now - ch.creation_time < FRESH_SECONDS


def _channels(server):
    from waitress.channel import HTTPChannel

    return [ch for ch in list(server._map.values()) if isinstance(ch, HTTPChannel)]


def busy_channels(server) -> int:
    """Connections with a request in flight, or just accepted (idle keep-alives excluded)."""
    now = time.time()
    return sum(1 for ch in _channels(server) if _in_flight(ch, now))


def close_idle(server) -> None:
    """Close connections with nothing in flight: a keep-alive client reconnects to the next process."""
    now = time.time()
    for ch in _channels(server):
        if not _in_flight(ch, now) and not ch.will_close:
            ch.will_close = True  # the loop closes it on its next pass (it is writable now)


def stop_accepting(server) -> None:
    """Take the listener out of the loop and close our copy of it (close, never shutdown(2))."""
    from waitress import wasyncore

    server.accepting = False
    wasyncore.dispatcher.close(server)  # not server.close(): the loop's trigger still wakes it


def drain(server, seconds: float) -> int:
    """Run the event loop until no request is in flight or `seconds` passed; returns how many are left."""
    from waitress import wasyncore

    end = time.monotonic() + seconds
    next_cleanup = 0.0
    while True:
        now = time.monotonic()
        if now >= next_cleanup:  # the listener is out of the loop, so its own cleanup no longer runs
            server.maintenance(time.time())
            next_cleanup = now + CLEANUP_INTERVAL_SECONDS
        # Each pass: a keep-alive connection is closed as soon as its answer is sent, before its
        # client can reuse it (a client sends on a connection it has not seen closed).
        close_idle(server)
        left = busy_channels(server)
        if not left or now >= end:
            return left
        wasyncore.loop(timeout=min(LOOP_SECONDS, end - now), map=server._map, use_poll=True, count=1)


def quiet_waitress() -> None:
    # "Task queue depth is N" is logged for every request that waits for a thread: under a burst
    # that is a journal line per request. Queueing is the designed behaviour (docs/serving.md).
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def make_run(notifier, request: settings.RequestSettings, listen: socket.socket | None,
             stop_supervisor: threading.Event):
    """The replacement for optillm.server.app.run(host=..., port=...)."""

    def run(host=None, port=None, **_flask_options) -> None:
        from waitress import create_server

        quiet_waitress()
        options = server_options(request)
        if listen is not None:
            server = create_server(_app(), sockets=[listen], **options)
        else:
            server = create_server(_app(), host=host, port=int(port), **options)
        stopping = threading.Event()

        def on_stop(signum, frame):
            # Runs on the loop's thread between polls: only flag it and wake the loop.
            stopping.set()
            server.pull_trigger()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        print(f"optillm-proxy-launcher: serving http://{server.effective_host}:{server.effective_port} "
              f"(waitress, {request.threads} threads, {request.connection_limit} connections)",
              file=sys.stderr, flush=True)
        from waitress import wasyncore

        while not stopping.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, map=server._map, use_poll=True, count=1)
        stop_accepting(server)
        stop_supervisor.set()
        in_flight = busy_channels(server)
        drain_seconds = request.drain
        extend_usec = int((drain_seconds + STOP_MARGIN_SECONDS) * 1_000_000)
        notifier.send(f"STOPPING=1\nSTATUS=draining: {in_flight} request(s) in flight, up to {drain_seconds:g} s "
                      f"(DRAIN_SECONDS)\nEXTEND_TIMEOUT_USEC={extend_usec}")
        print(f"optillm-proxy-launcher: stopping: no new connections; draining {in_flight} request(s) in flight "
              f"for up to {drain_seconds:g} s", file=sys.stderr, flush=True)
        left = drain(server, drain_seconds)
        if left:
            print(f"optillm-proxy-launcher: drain ended at DRAIN_SECONDS={drain_seconds:g} with {left} request(s) "
                  "still in flight; they are cut", file=sys.stderr, flush=True)
        else:
            print("optillm-proxy-launcher: drained: every request in flight was answered", file=sys.stderr,
                  flush=True)
        # Nothing is left to run but what the drain cut; the pool threads are told to end.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)

    def _app():
        import optillm.server

        return optillm.server.app

    return run
