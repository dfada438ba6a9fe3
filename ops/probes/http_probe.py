"""One GET against the proxy, stdlib only, and the one /health poller everything waits with.

`opsctl health` runs every minute, so a plain-http probe is one HTTP/1.0 request on a socket
(the server answers with a complete body and closes; no chunking in HTTP/1.0): http.client's
import (its email parser, ssl) costs more than the whole probe. https goes through http.client
and ssl, imported only then. ops (upgrade), the tests and the bench scripts wait for a starting
proxy with `wait_healthy`; the launcher does not import ops.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

# A probe reads a small JSON answer; a proxy sending more is not one to trust further.
MAX_BODY_BYTES = 1 << 20
POLL_INTERVAL_S = 0.2


class ProbeError(Exception):
    """The request got no HTTP answer; str() is the reason, one line."""


class Refused(ProbeError):
    pass


class TimedOut(ProbeError):
    pass


class Answer:
    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:60]!r})"

    def json(self):
        import json

        return json.loads(self.body)

    def json_ok(self) -> bool:
        try:
            self.json()
        except ValueError:
            return False
        return True

    def healthy(self) -> bool:
        """optillm's /health answer: 200 {"status": "ok"}."""
        try:
            return self.status == 200 and self.json().get("status") == "ok"
        except (ValueError, AttributeError):
            return False


def _https_get(parts, path: str, headers: dict[str, str], timeout: float) -> Answer:
    import http.client
    import ssl

    conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                       context=ssl.create_default_context())
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.read(MAX_BODY_BYTES))
    except http.client.HTTPException as exc:
        raise ProbeError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    finally:
        conn.close()


def _parse(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = lines[0].split(None, 2)
    if not sep or len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise ProbeError("BadStatusLine: not an HTTP answer")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            body = body[: int(value)]
    return Answer(int(fields[1]), body)


def _http_get(parts, path: str, headers: dict[str, str], timeout: float) -> Answer:
    host = parts.hostname
    port = parts.port or 80
    netloc = f"[{host}]" if ":" in host else host
    lines = [f"GET {path} HTTP/1.0", f"Host: {netloc}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    # An ASCII host as bytes: a str host makes getaddrinfo load the idna codec on every probe.
    address = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks, size = [], 0
        while size <= MAX_BODY_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return _parse(b"".join(chunks))


def get(base_url: str, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Answer:
    """GET base_url + path; each socket operation bounded by `timeout` (the caller bounds the whole)."""
    parts = urlsplit(base_url)
    full = parts.path.rstrip("/") + path
    headers = {"Accept": "application/json", **(headers or {})}
    try:
        if parts.scheme == "https":
            return _https_get(parts, full, headers, timeout)
        return _http_get(parts, full, headers, timeout)
    except ConnectionRefusedError:
        raise Refused("connection refused") from None
    except TimeoutError:
        raise TimedOut("timed out") from None
    except OSError as exc:
        raise ProbeError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None


def health_ok(base_url: str, timeout: float = 2.0) -> bool:
    try:
        return get(base_url, "/health", timeout=timeout).healthy()
    except ProbeError:
        return False


def wait_healthy(base_url: str, within: float, *, check=None, ready=None, interval: float = POLL_INTERVAL_S,
                 clock=time.monotonic, sleep=time.sleep) -> float | None:
    """Poll /health until it answers 200 {"status": "ok"} (and `ready()` agrees): seconds it took,
    or None once `within` seconds passed. `check()` runs before every attempt and raises to give
    up early (the process died); `ready()` is asked only once /health answered."""
    start = clock()
    while True:
        if check is not None:
            check()
        if health_ok(base_url, timeout=min(2.0, max(0.1, within))) and (ready is None or ready()):
            return clock() - start
        if clock() - start + interval > within:
            return None
        sleep(interval)
