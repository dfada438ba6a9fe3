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

import json
import logging
import os
import signal
import socket
import sys
import threading
import time

from typing import Callable

from optillm_proxy_launcher import reload, settings
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
    return adopt_socket(SD_LISTEN_FDS_START, host, port)


def adopt_socket(fd: int, host: str, port: int) -> socket.socket:
    """The listening socket on descriptor `fd` (systemd's, or the one a reload hands over), checked."""
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


# What waitress refuses itself, before any layer of ours sees the request, by its HTTP status:
# the rule it is recorded and counted under (policy.RULES documents each).
SERVER_RULES = {400: "malformed-request", 413: "body-too-large", 431: "headers-too-large"}
SERVER_RULE_DEFAULT = "malformed-request"


def server_rule(code: int) -> str:
    return SERVER_RULES.get(code, SERVER_RULE_DEFAULT)


def error_body(code: int, reason: str, detail: str) -> bytes:
    """waitress's own answer (an unparseable request, a limit, an app that raised) in OpenAI's shape."""
    rule = server_rule(code) if code < 500 else "internal_error"
    text = " ".join((f"{reason}: {detail}" if detail else reason).split())[:300]
    if code < 500:
        text = f"refused by optillm-proxy ({rule}): {text}"
    kind = "invalid_request_error" if code < 500 else "server_error"
    return json.dumps({"error": {"message": text, "type": kind, "code": rule}}).encode()


def json_channel(on_refused: Callable[[dict, int, str], None] | None):
    """waitress's connection class with its error task answering in OpenAI's shape; each 4xx it sends
    is handed to `on_refused(environ, status, rule)` (the gate records and counts it)."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            error = self.request.error
            body = error_body(error.code, error.reason, error.body)
            if error.code < 500 and on_refused is not None:
                # A request that failed to parse may have no method or path yet.
                environ = {"REQUEST_METHOD": str(getattr(self.request, "command", None) or "")[:20],
                           "PATH_INFO": str(getattr(self.request, "path", None) or "")}
                try:
                    on_refused(environ, error.code, server_rule(error.code))
                except Exception as exc:  # a record must never cost the client its answer
                    print(f"optillm-proxy-launcher: could not record a refused request: {type(exc).__name__}",
                          file=sys.stderr, flush=True)
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend([("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonChannel


class Switching:
    """A reload's switch (reload.Switch), asked for by the control thread, done on the serving loop."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.stopping = threading.Event()  # SIGTERM: a stop wins over a reload in progress
        self.switch = None
        self.wake: Callable[[], None] = lambda: None

    def request(self, switch) -> None:
        self.switch = switch
        self.requested.set()
        self.wake()

    def take(self):
        self.requested.clear()
        switch, self.switch = self.switch, None
        return switch


def make_run(notifier, request: settings.RequestSettings, listen: socket.socket | None,
             stop_supervisor: threading.Event, on_refused: Callable[[dict, int, str], None] | None = None,
             switching: Switching | None = None, handoff=None, on_serving: Callable[[], None] = lambda: None):
    """The replacement for optillm.server.app.run(host=..., port=...); `on_refused` sees each request
    waitress refuses itself (json_channel). `switching`: where a reload asks this process to hand its
    socket over; `handoff` (reload.Handoff): this process takes a socket over and serves only once the
    old one says go; `on_serving()` runs as the loop starts (the watchdog, the control socket)."""
    switching = switching or Switching()

    def run(host=None, port=None, **_flask_options) -> None:
        from waitress import create_server

        quiet_waitress()
        options = server_options(request)
        if listen is not None:
            server = create_server(_app(), sockets=[listen], **options)
        else:
            server = create_server(_app(), host=host, port=int(port), **options)
        # Connections are made by the server's channel_class at accept time.
        server.channel_class = json_channel(on_refused)
        stopping = switching.stopping

        def on_stop(signum, frame):
            # Runs on the loop's thread between polls: only flag it and wake the loop.
            stopping.set()
            server.pull_trigger()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if handoff is not None and not take_over(server, handoff):
            return
        switching.wake = server.pull_trigger
        on_serving()
        print(f"optillm-proxy-launcher: serving http://{server.effective_host}:{server.effective_port} "
              f"(waitress, {request.threads} threads, {request.connection_limit} connections)",
              file=sys.stderr, flush=True)
        from waitress import wasyncore

        handed_to = None  # the reload.Switch this process handed its socket to
        while handed_to is None and not stopping.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, map=server._map, use_poll=True, count=1)
            if switching.requested.is_set() and not stopping.is_set():
                switch = switching.take()
                if switch is not None and switch.alive() and not switch.aborted.is_set():
                    # The new launcher accepts only after `go`, so no connection finds neither
                    # process accepting: it waits in the backlog for that moment.
                    stop_accepting(server)
                    switch.commit()
                    handed_to = switch
        if handed_to is not None:
            hand_over_and_drain(server, notifier, request, stop_supervisor, handed_to)
            return
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

    def take_over(server, handoff) -> bool:
        """The new launcher of a reload: its app checked in-process, `ready`, then serve on `go`."""
        if not reload.app_health(_app()):
            raise ConfigRefused("the new launcher's /health did not answer 200 in-process: see the lines above")
        if not handoff.ready_and_wait():
            print("optillm-proxy-launcher: the running launcher did not hand its socket over (it refused the "
                  "switch or went away): this one exits", file=sys.stderr, flush=True)
            return False
        notifier.retarget(handoff.notify_socket)  # the main process now: systemd listens to it
        return True

    def _app():
        import optillm.server

        return optillm.server.app

    return run


def hand_over_and_drain(server, notifier, request: settings.RequestSettings, stop_supervisor: threading.Event,
                        switch: reload.Switch) -> None:
    """After a reload's switch: another process is main and serves; finish what is in flight, let the
    helper have its answer (exiting first would cut it), end what the plugins started, return."""
    new_pid = switch.child.pid
    stop_supervisor.set()
    notifier.retarget(None)  # systemd hears only the main process now; nothing more to tell it
    in_flight = busy_channels(server)
    print(f"optillm-proxy-launcher: reloaded: PID {new_pid} serves new connections; draining {in_flight} "
          f"request(s) in flight for up to {request.drain:g} s", file=sys.stderr, flush=True)
    left = drain(server, request.drain)
    if left:
        print(f"optillm-proxy-launcher: drain ended at DRAIN_SECONDS={request.drain:g} with {left} request(s) "
              "still in flight; they are cut", file=sys.stderr, flush=True)
    else:
        print("optillm-proxy-launcher: drained: every request in flight was answered", file=sys.stderr, flush=True)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
    switch.answered.wait(reload.ANSWER_SECONDS)
    ended = reload.end_children()
    if ended:
        print(f"optillm-proxy-launcher: ended {len(ended)} process(es) its plugins had started", file=sys.stderr,
              flush=True)
