"""Admission: a bound on the requests and request bytes inside the app at once (outermost WSGI layer).

waitress reads every request whole before a pool thread runs it (bodies past its in-memory
buffer spool to a temporary file), so a queued request costs little memory; the cost comes when
the app parses the body and a strategy copies it into several upstream calls. This layer sits
right inside the gate, around optillm's Flask app (main.admission_layer), and, before Flask sees
a request, counts:
- requests with a body, or with a method other than GET/HEAD: at most `max_requests` (the pool
  size minus settings.RESERVED_THREADS, so /health always finds a thread and the watchdog is fed);
- their body bytes (CONTENT_LENGTH; waitress sets it for chunked bodies too, after reading them):
  at most `max_bytes`.
A request past either bound is answered at once: 503, `Retry-After`, OpenAI's error shape, and
the app never runs. A request is counted until the server closes its answer (the response
iterable's close(), which WSGI servers call in a `finally`), so streamed answers count right.

Hook: `on_refused(environ, reason)` is called once per refused request, before the 503 is sent,
with the WSGI environ and a reason, one of REASONS ("busy": the request bound, "memory": the byte
bound). The launcher's hook names the rule in the environ, so the gate around this layer records
and counts the 503 like any refusal; an exception it raises is reported once on
stderr and never changes the answer.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Callable, Iterable

from optillm_proxy_launcher.closing import Closing

REASONS = ("busy", "memory")
# Seconds a refused client is told to wait: requests here last seconds, not minutes.
RETRY_AFTER_SECONDS = 2
_UNCOUNTED_METHODS = ("GET", "HEAD")
_MESSAGES = {
    "busy": "the proxy is running as many requests as it is configured for (SERVER_THREADS); retry shortly",
    "memory": "the proxy holds as many request bytes as it is configured for (ADMIT_BODY_BYTES); retry shortly",
}


class Admission:
    def __init__(self, app: Callable, max_requests: int, max_bytes: int,
                 on_refused: Callable[[dict, str], None] | None = None) -> None:
        self.app = app
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.on_refused = on_refused
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self._warned = False

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        size = body_size(environ)
        if environ.get("REQUEST_METHOD") in _UNCOUNTED_METHODS and not size:
            return self.app(environ, start_response)
        reason = self._take(size)
        if reason:
            return self._refuse(environ, start_response, reason)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._release(size)
            raise
        return Closing(result, lambda: self._release(size))

    def _take(self, size: int) -> str | None:
        with self._lock:
            if self.requests >= self.max_requests:
                return "busy"
            # One request alone is always admissible (settings: ADMIT_BODY_BYTES >= MAX_REQUEST_BYTES).
            if self.requests and self.bytes + size > self.max_bytes:
                return "memory"
            self.requests += 1
            self.bytes += size
            return None

    def _release(self, size: int) -> None:
        with self._lock:
            self.requests -= 1
            self.bytes -= size

    def _refuse(self, environ: dict, start_response: Callable, reason: str) -> list[bytes]:
        if self.on_refused is not None:
            try:
                self.on_refused(environ, reason)
            except Exception as exc:  # a metrics hook must never turn a 503 into a 500
                if not self._warned:
                    self._warned = True
                    print(f"optillm-proxy-launcher: admission hook failed: {type(exc).__name__}", file=sys.stderr,
                          flush=True)
        body = json.dumps({"error": {"message": _MESSAGES[reason], "type": "server_error",
                                     "code": f"overloaded_{reason}"}}).encode()
        start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body))),
                                                   ("Retry-After", str(RETRY_AFTER_SECONDS))])
        return [body]


def body_size(environ: dict) -> int:
    """CONTENT_LENGTH as a number; a value the server let through but that is not one counts as 0
    (the gate answers it 400 before reading anything)."""
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0
