"""ops.probes.http_probe: the stdlib GET against real sockets, and the one /health poller."""

from __future__ import annotations

import socket
import threading

import pytest

from ops.probes import http_probe
from ops.probes.http_probe import ProbeError, Refused, get, health_ok, wait_healthy


def serve_once(reply: bytes) -> tuple[str, threading.Thread]:
    """A socket that answers one connection with `reply` (raw bytes) and closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", thread


def test_content_length_bounds_the_body():
    url, thread = serve_once(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}trailing")
    answer = get(url, "/health")
    thread.join(5)
    assert (answer.status, answer.body) == (200, b'{"status":"ok"}') and answer.healthy()


def test_not_http_is_a_probe_error():
    url, thread = serve_once(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ProbeError, match="not an HTTP answer"):
        get(url, "/health")
    thread.join(5)


def test_refused_and_health_ok_false():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(Refused):
        get(url, "/health")
    assert health_ok(url) is False


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_healthy_gives_up_after_within(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(http_probe, "health_ok", lambda url, timeout: False)
    assert wait_healthy("http://x", 1.0, clock=clock, sleep=clock.sleep) is None
    assert 0.8 <= clock.now <= 1.0


def test_wait_healthy_waits_for_ready_and_check_stops_it(monkeypatch):
    clock = Clock()
    answers = iter([False, True, True, True])
    monkeypatch.setattr(http_probe, "health_ok", lambda url, timeout: next(answers))
    ready = iter([False, True])
    assert wait_healthy("http://x", 10, ready=lambda: next(ready), clock=clock, sleep=clock.sleep) == \
        pytest.approx(0.4)

    def died():
        raise RuntimeError("process exited")

    with pytest.raises(RuntimeError, match="process exited"):
        wait_healthy("http://x", 10, check=died, clock=clock, sleep=clock.sleep)
