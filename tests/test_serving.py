"""Serving an inherited socket and draining on SIGTERM, with real optillm 0.3.12 (lean runtime).

systemd-socket-activate (from Debian's systemd package) hands the launcher a listening socket the
way optillm-proxy.socket does (LISTEN_FDS/LISTEN_PID); the restart-under-load proofs with a real
systemd are in tests/test_box_no_request_lost.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from optillm_proxy_launcher import serving
from optillm_proxy_launcher.settings import ConfigRefused
from tests.fixtures.runtime import REPO, free_port, launcher_credentials
from tests.prerequisites import require_tool

pytestmark = pytest.mark.real

LAUNCHER = REPO / "launcher" / "optillm-proxy-launcher.py"
KEY = "opx-serving-test-key-0123456789abcdef"


def socket_activate() -> str:
    return require_tool("systemd-socket-activate", "systemd")


class Activated:
    """The launcher started by systemd-socket-activate on `listen`, as the socket unit would."""

    def __init__(self, runtime: Path, tmp: Path, upstream_url: str, *, listen: str | None = None,
                 port: int | None = None, **env: str):
        port = port or free_port()
        listen = listen or f"127.0.0.1:{port}"
        creds = launcher_credentials(tmp / "creds", KEY)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(creds),
               **env}
        self.port = port
        self.log_path = tmp / f"activated-{port}.log"
        argv = [socket_activate(), "-l", listen, *[f"-E{k}" for k in env],
                str(runtime / "bin" / "python"), "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port", str(port),
                "--base-url", upstream_url, "--model", "jerry-xl"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        listen_port = int(listen.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        # Listening, without connecting (a connection is what makes it start the launcher).
        while not _listening(listen_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"systemd-socket-activate is not listening on {listen}:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:port? (from /proc/net/tcp; state 0A is LISTEN)"""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(f.split()[1] == want and f.split()[3] == "0A" for f in list(table)[1:])


def chat(port: int, model: str = "moa-jerry-xl", timeout: float = 120) -> int:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}]}, timeout=timeout)
    return r.status_code


def test_first_request_waits_on_the_socket_until_the_launcher_serves_it(lean_runtime, upstream, tmp_path):
    server = Activated(lean_runtime, tmp_path, upstream.base_url)
    port = server.port
    try:
        # Sent before optillm has even been imported: the kernel queues it on the socket.
        assert chat(port, "jerry-xl") == 200
        assert len(upstream.calls()) == 1
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_sigterm_drains_requests_in_flight_then_exits_0(lean_runtime, upstream, tmp_path):
    server = Activated(lean_runtime, tmp_path, upstream.base_url)
    port = server.port
    try:
        assert chat(port, "jerry-xl") == 200  # up
        upstream.delay(1.0)  # a moa request now takes ~2-3 s
        results: list = []

        def one():
            try:
                results.append(chat(port))
            except httpx.HTTPError as exc:
                results.append(type(exc).__name__)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(upstream.calls()) < 7 and time.monotonic() < deadline:  # all six are in optillm
            time.sleep(0.05)
        launcher_pid = server.proc.pid  # systemd-socket-activate execs the launcher in place
        os.kill(launcher_pid, signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert results == [200] * 6, results
        assert server.proc.wait(30) == 0
        log = server.log()
        assert "draining 6 request(s) in flight" in log and "drained: every request in flight was answered" in log
    finally:
        server.stop()


def test_a_drain_serves_a_connection_accepted_before_it_and_closes_idle_keepalives(lean_runtime, upstream, tmp_path):
    """A connection accepted just before SIGTERM whose request comes after it is still answered;
    an idle keep-alive connection is closed (its client reconnects to the next process)."""
    server = Activated(lean_runtime, tmp_path, upstream.base_url)
    port = server.port
    try:
        assert chat(port, "jerry-xl") == 200
        upstream.delay(1.0)
        busy = threading.Thread(target=chat, args=(port,))  # keeps the drain going for seconds
        busy.start()
        deadline = time.monotonic() + 30
        while len(upstream.calls()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in idle.recv(4096)
        late = socket.create_connection(("127.0.0.1", port), timeout=30)
        time.sleep(0.3)  # accepted by the server, nothing sent yet
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        late.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert late.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert _closed_by_server(idle, 10) is not None
        busy.join(60)
        assert server.proc.wait(30) == 0
        late.close()
        idle.close()
    finally:
        upstream.reset()
        server.stop()


def test_drain_is_bounded_by_drain_seconds(lean_runtime, upstream, tmp_path):
    server = Activated(lean_runtime, tmp_path, upstream.base_url, DRAIN_SECONDS="1")
    port = server.port
    try:
        assert chat(port, "jerry-xl") == 200
        upstream.delay(120)
        hung = threading.Thread(target=lambda: pytest.raises(httpx.HTTPError, chat, port, "jerry-xl", 60))
        hung.start()
        deadline = time.monotonic() + 30
        while len(upstream.calls()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - start < 5
        assert "drain ended at DRAIN_SECONDS=1 with 1 request(s) still in flight; they are cut" in server.log()
        hung.join(30)
    finally:
        upstream.reset()
        server.stop()


def test_a_socket_on_another_address_than_execstart_is_refused(lean_runtime, upstream, tmp_path):
    port, other = free_port(), free_port()
    server = Activated(lean_runtime, tmp_path, upstream.base_url, listen=f"127.0.0.1:{other}", port=port)
    try:
        with socket.create_connection(("127.0.0.1", other), timeout=10):
            pass  # the first connection makes systemd-socket-activate start the launcher
        assert server.proc.wait(60) == 78
        lines = [line for line in server.log().splitlines() if line.startswith("optillm-proxy-launcher")]
        assert lines == [f"optillm-proxy-launcher: refused: optillm-proxy.socket listens on 127.0.0.1:{other} but "
                         f"ExecStart says --host 127.0.0.1 --port {port}: make them the same address (an explicit "
                         "IPv4 address in ListenStream=, not a bare port, which is IPv6 dual-stack)"]
    finally:
        server.stop()


def _closed_by_server(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closed `sock` (EOF or reset), or None if it stayed open `limit` s."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - start


def test_unfinished_requests_and_idle_keepalives_are_closed_by_the_server(lean_runtime, upstream, tmp_path):
    """CLIENT_TIMEOUT_SECONDS: a request whose headers never finish, one whose body never comes and
    an idle keep-alive connection are all closed by the server (within the timeout plus waitress's
    cleanup interval), while the pool stays free for real requests."""
    server = Activated(lean_runtime, tmp_path, upstream.base_url, CLIENT_TIMEOUT_SECONDS="5")
    port = server.port
    socks = []
    try:
        assert chat(port, "jerry-xl") == 200
        headers = socket.create_connection(("127.0.0.1", port))
        headers.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # no blank line: unfinished
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in idle.recv(4096)  # answered, and the connection is kept alive
        socks = [headers, body, idle]
        assert chat(port, "jerry-xl") == 200  # served meanwhile
        bound = 5 + serving.CLEANUP_INTERVAL_SECONDS + 5  # timeout + cleanup interval + slack
        closed = [_closed_by_server(s, bound) for s in socks]
        assert all(c is not None for c in closed), closed
        assert "Traceback" not in server.log()
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_strict_parsing_and_no_server_header(lean_runtime, upstream, tmp_path):
    server = Activated(lean_runtime, tmp_path, upstream.base_url)
    port = server.port
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=60)
        assert r.status_code == 200 and "server" not in r.headers  # waitress's ident is off
        # A lower-case method never reaches Flask's router (which would upper-case it).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # httpx would upper-case it
            raw.sendall(b"post /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            answer = raw.recv(65536)
        assert answer.startswith(b"HTTP/1.0 400 ") and b"Traceback" not in answer
        # Request headers past the bound: refused by the server, no traceback.
        r = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Big": "a" * (serving.MAX_HEADER_BYTES + 10)},
                      timeout=10)
        assert r.status_code == 431
    finally:
        server.stop()


def test_past_the_thread_bound_chat_requests_get_503_and_health_still_answers(lean_runtime, upstream, tmp_path):
    """SERVER_THREADS=4: two threads run chat completions, two stay for /health; 8 concurrent moa
    requests each get 200 or 503 with Retry-After, none is dropped, /health answers throughout."""
    server = Activated(lean_runtime, tmp_path, upstream.base_url, SERVER_THREADS="4")
    port = server.port
    try:
        assert chat(port, "jerry-xl") == 200
        upstream.delay(1.0)
        results: list = []

        def one():
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                               headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                               json={"model": "moa-jerry-xl", "messages": [{"role": "user", "content": "6*7?"}]})
                results.append((r.status_code, r.headers.get("retry-after"),
                                r.json()["error"]["code"] if r.status_code == 503 else None))
            except httpx.HTTPError as exc:
                results.append((type(exc).__name__, None, None))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        health = [httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code for _ in range(5)]
        for t in threads:
            t.join(120)
        statuses = [r[0] for r in results]
        assert len(results) == 8 and set(statuses) <= {200, 503}, results
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, results
        assert all(r[1] == "2" and r[2] == "overloaded_busy" for r in results if r[0] == 503), results
        assert health == [200] * 5
        # Each 503 is recorded and counted like any refusal, under its own rule.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

        def sample(series: str) -> float:
            found = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.M)
            return float(found.group(1)) if found else 0.0

        refused = statuses.count(503)
        assert sample('optillm_proxy_policy_refusals_total{rule="overloaded_busy"}') == refused, metrics[-3000:]
        assert sample('optillm_proxy_requests_total{approach="-",status="503"}') == refused, metrics[-3000:]
    finally:
        upstream.reset()
        server.stop()


# --- unit level: what the launcher accepts from LISTEN_FDS -----------------------------------------


def test_listen_variables_are_taken_out_and_meant_only_for_their_pid():
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x", "OTHER": "y"}
    assert serving.inherited_socket(environ, os.getpid(), "127.0.0.1", 1) is None  # another pid's
    assert environ == {"OTHER": "y"}  # never passed on to children
    assert serving.inherited_socket({}, os.getpid(), "127.0.0.1", 1) is None


def test_several_sockets_are_refused():
    with pytest.raises(ConfigRefused, match="systemd passed 2 sockets"):
        serving.inherited_socket({"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())}, os.getpid(), "127.0.0.1", 1)
