"""A recording OpenAI-compatible upstream: answers chat completions and /v1/models, remembers calls.

Stdlib only, so it runs anywhere a python3 does (tests, demos, the test box). Each call is kept
as {"path", "model", "n", "authorization", "peer", "headers"}; GET /_calls lists them, POST /_reset forgets them,
POST /_status {"status": 500} makes chat completions fail with that status until reset, and
POST /_delay {"seconds": 2.5} makes each chat completion wait that long first (a slow or hung
LiteLLM) until reset.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "The answer is 42."
TOKENS_PER_CHOICE = 7


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict] = []
        self.fail_status: int | None = None
        self.delay_seconds: float = 0.0
        self.release = threading.Event()  # set by /_reset: delayed answers stop waiting


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-upstream/1"
    # Keep-alive, as LiteLLM (uvicorn) does: a client that reuses its connections shows it in the
    # `peer` of its calls. Every answer carries Content-Length, so HTTP/1.1 framing is exact.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a reused connection stalls ~40 ms on
    # the client's delayed ACK. uvicorn sets TCP_NODELAY too.
    disable_nagle_algorithm = True
    state: _State  # set on the subclass made per server

    def log_message(self, fmt, *args):  # quiet: tests read /_calls, not stderr
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _record(self, body: dict) -> None:
        with self.state.lock:
            self.state.calls.append({
                "path": self.path,
                "model": body.get("model"),
                "n": body.get("n", 1),
                "authorization": self.headers.get("Authorization"),
                "peer": self.client_address[1],  # the caller's port: one per connection it opened
                "headers": sorted(k.lower() for k in self.headers.keys()),
            })

    def do_GET(self):
        if self.path == "/_calls":
            with self.state.lock:
                return self._send(200, list(self.state.calls))
        if self.path.rstrip("/").endswith("/models"):
            self._record({})
            return self._send(200, {"object": "list", "data": [
                {"id": "jerry-xl", "object": "model", "created": 0, "owned_by": "fake-upstream"}]})
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = self._body()
        if self.path == "/_reset":
            with self.state.lock:
                self.state.calls.clear()
                self.state.fail_status = None
                self.state.delay_seconds = 0.0
                self.state.release.set()
                self.state.release = threading.Event()
            return self._send(200, {"reset": True})
        if self.path == "/_status":
            with self.state.lock:
                self.state.fail_status = body.get("status")
            return self._send(200, {"status": body.get("status")})
        if self.path == "/_delay":
            with self.state.lock:
                self.state.delay_seconds = float(body.get("seconds") or 0)
            return self._send(200, {"seconds": self.state.delay_seconds})
        if self.path.rstrip("/").endswith("/chat/completions"):
            self._record(body)
            with self.state.lock:
                delay, release = self.state.delay_seconds, self.state.release
            if delay:
                release.wait(delay)
            if self.state.fail_status:
                return self._send(self.state.fail_status, {"error": {"message": "injected failure"}})
            n = int(body.get("n") or 1)
            choices = [{"index": i, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": ANSWER}} for i in range(n)]
            return self._send(200, {
                "id": f"chatcmpl-fake-{time.monotonic_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": choices,
                "usage": {"prompt_tokens": 10, "completion_tokens": TOKENS_PER_CHOICE * n,
                          "total_tokens": 10 + TOKENS_PER_CHOICE * n},
            })
        return self._send(404, {"error": {"message": f"no route {self.path}"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog is 5: a strategy burst opens hundreds of connections at once.
    request_queue_size = 1024


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"state": _State()})
    return _Server((host, port), handler)


def serve(host: str, port: int) -> None:
    server = make_server(host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":  # python -m ops.fake_upstream [PORT]
    import sys

    serve("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
