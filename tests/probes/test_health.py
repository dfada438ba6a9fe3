"""`opsctl health`: every exit path, with a stand-in for its GET and with real sockets (a stub
server, a closed port, a server that never answers), the fast path and click's path alike."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from click.testing import CliRunner

from ops.cli import cli
from ops.probes.client import ApiKey, UsageProblem, parse_base_url, resolve_api_key
from ops.probes.health import CRITICAL, OK, WARNING, probe
from ops.probes.http_probe import Answer, ProbeError, Refused, TimedOut
from tests.probe_helpers import hermetic, raising, release, run_cli, use_fetch  # noqa: F401, F811 (fixtures)

STATUS_LINE = re.compile(r"^OPTILLM-PROXY (OK|WARNING|CRITICAL|UNKNOWN) - .+ \| time=\d+\.\d{3}s;[\d.]+;[\d.]+;0$")
KEY = ApiKey("opx-test-key", "test")
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None):
    return run_cli("health", *args, env=env)


def answer(status: int, data=None, text: str | None = None) -> Answer:
    return Answer(status, text.encode() if text is not None else json.dumps(data).encode())


def routes(**by_path):
    def fetch(path: str, headers: dict) -> Answer:
        found = by_path.get(path.replace("/", "_").strip("_"))
        if found is None:
            return answer(404, {"error": "not found"})
        return found(path, headers) if callable(found) else found
    return fetch


def test_health_200_is_ok_with_perfdata(monkeypatch):
    seen = use_fetch(monkeypatch, routes(health=answer(200, {"status": "ok"})))
    result = run()
    assert result.exit_code == 0
    line = result.output.strip()
    assert STATUS_LINE.match(line), line
    assert line.startswith("OPTILLM-PROXY OK - /health 200 in ")
    assert line.endswith(";1;3;0")
    assert [path for path, _ in seen] == ["/health"]
    assert "Authorization" not in seen[0][1]  # /health needs no key: none is sent


def test_fallback_to_models_when_health_404(monkeypatch):
    seen = use_fetch(monkeypatch, routes(v1_models=answer(200, {"object": "list", "data": []})))
    result = run(env={"OPSCTL_API_KEY": "opx-from-env"})
    assert result.exit_code == 0, result.output
    assert "/v1/models 200 (/health 404)" in result.output
    assert [path for path, _ in seen] == ["/health", "/v1/models"]
    assert seen[1][1]["Authorization"] == "Bearer opx-from-env"


def test_401_on_fallback_is_critical_and_names_the_key_source(monkeypatch):
    use_fetch(monkeypatch, routes(v1_models=answer(401, {"error": "Invalid API key"})))
    result = run("--api-key", "opx-wrong")
    assert result.exit_code == 2
    assert STATUS_LINE.match(result.output.strip())
    assert "401" in result.output and "--api-key" in result.output
    assert "opx-wrong" not in result.output  # the key itself is never printed


def test_500_on_both_is_critical(monkeypatch):
    use_fetch(monkeypatch, lambda path, headers: answer(500, {"error": "boom"}))
    result = run()
    assert result.exit_code == 2
    assert "both endpoints failed: /health 500; /v1/models 500" in result.output


def test_200_non_json_is_critical(monkeypatch):
    use_fetch(monkeypatch, lambda path, headers: answer(200, text="<html>hello</html>"))
    result = run()
    assert result.exit_code == 2
    assert "/health 200 but not JSON; /v1/models 200 but not JSON" in result.output


def test_refused_is_critical(monkeypatch):
    use_fetch(monkeypatch, raising(Refused("connection refused")))
    result = run()
    assert result.exit_code == 2
    assert "connection refused by http://127.0.0.1:4020" in result.output


# --- why the local unit is down (ops/probes/unit_state.py), on a probe that got no HTTP answer --------

LIMIT_HIT = [{"Id": "optillm-proxy.service", "ActiveState": "failed", "Result": "exit-code"},
             {"Id": "optillm-proxy.socket", "ActiveState": "failed", "Result": "service-start-limit-hit"}]


def test_refused_names_a_start_limit_hit_of_the_local_units(monkeypatch):
    import ops.probes.unit_state

    use_fetch(monkeypatch, raising(Refused("connection refused")))
    monkeypatch.setattr(ops.probes.unit_state, "read", lambda runner=None, timeout=2.0: LIMIT_HIT)
    result = run()
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert ("connection refused by http://127.0.0.1:4020 (is optillm-proxy running? systemctl status optillm-proxy); "
            "optillm-proxy.service failed (exit-code), optillm-proxy.socket failed (service-start-limit-hit): "
            "systemd refuses further starts after a crash loop") in result.output
    assert "sudo systemctl reset-failed optillm-proxy optillm-proxy.socket" in result.output


@pytest.mark.parametrize("url", ["http://10.0.0.9:4020", "http://127.0.0.1:4021"])
def test_another_hosts_proxy_is_never_explained_by_this_hosts_units(monkeypatch, url):
    import ops.probes.unit_state

    use_fetch(monkeypatch, raising(Refused("connection refused")))
    monkeypatch.setattr(ops.probes.unit_state, "read", lambda runner=None, timeout=2.0: pytest.fail("systemd asked for another host"))
    result = run("--url", url)
    assert result.exit_code == 2 and "failed (" not in result.output


def test_a_healthy_or_answering_proxy_never_asks_systemd(monkeypatch):
    import ops.probes.unit_state

    monkeypatch.setattr(ops.probes.unit_state, "read", lambda runner=None, timeout=2.0: pytest.fail("systemd asked on an answer"))
    use_fetch(monkeypatch, lambda path, headers: answer(503, text="down"))
    assert run().exit_code == 2
    use_fetch(monkeypatch, lambda path, headers: answer(200, {"status": "ok"}))
    assert run().exit_code == 0


def test_a_diagnosis_that_breaks_keeps_the_critical(monkeypatch):
    import ops.probes.unit_state

    def broken(runner=None, timeout=2.0):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    use_fetch(monkeypatch, raising(Refused("connection refused")))
    monkeypatch.setattr(ops.probes.unit_state, "read", broken)
    result = run()
    assert result.exit_code == 2 and "connection refused by" in result.output and "internal error" not in result.output


DRAINING = [{"Id": "optillm-proxy.service", "ActiveState": "deactivating", "SubState": "stop-sigterm",
             "Result": "success", "StatusText": "draining: 3 request(s) in flight, up to 300 s (DRAIN_SECONDS)"},
            {"Id": "optillm-proxy.socket", "ActiveState": "active", "SubState": "running", "Result": "success"}]


def test_no_answer_during_a_drain_is_a_warning_that_says_so(monkeypatch):
    import ops.probes.unit_state

    use_fetch(monkeypatch, raising(TimedOut("timed out")))
    monkeypatch.setattr(ops.probes.unit_state, "read", lambda runner=None, timeout=2.0: DRAINING)
    result = run()
    assert result.exit_code == 1 and "WARNING" in result.output, result.output
    assert ("optillm-proxy.service is deactivating (stop-sigterm): draining: 3 request(s) in flight, up to 300 s "
            "(DRAIN_SECONDS); new connections wait in optillm-proxy.socket's backlog") in result.output


def test_a_restart_without_a_listening_socket_stays_critical(monkeypatch):
    import ops.probes.unit_state

    socket_down = [DRAINING[0], {**DRAINING[1], "ActiveState": "inactive"}]
    use_fetch(monkeypatch, raising(Refused("connection refused")))
    monkeypatch.setattr(ops.probes.unit_state, "read", lambda runner=None, timeout=2.0: socket_down)
    assert run().exit_code == 2


def test_a_closed_stdout_keeps_the_exit_code():
    """Monitoring reads the exit code; a probe whose stdout is gone must still give it, no traceback."""
    done = subprocess.run([sys.executable, "-c", "import os, sys; os.close(1); sys.stdout = None; "
                           "sys.argv[1:] = ['health', '--url', 'http://127.0.0.1:1', '--timeout', '2']; "
                           "from ops.cli import main; main()"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_unit_state_reads_systemctl_show_and_says_nothing_without_systemd():
    from ops.probes import unit_state

    shown = ("Id=optillm-proxy.service\nActiveState=failed\nResult=exit-code\n\n"
             "Id=optillm-proxy.socket\nActiveState=active\nResult=success\n")
    seen = []

    def runner(argv, timeout):
        seen.append(argv)
        assert timeout <= unit_state.SYSTEMCTL_TIMEOUT_S
        return subprocess.CompletedProcess(argv, 0, shown, "")

    units = unit_state.read(runner)
    assert seen[0][:2] == ["systemctl", "show"] and seen[0][-2:] == ["optillm-proxy.service", "optillm-proxy.socket"]
    assert units == [{"Id": "optillm-proxy.service", "ActiveState": "failed", "Result": "exit-code"},
                     {"Id": "optillm-proxy.socket", "ActiveState": "active", "Result": "success"}]
    assert unit_state.describe(units) == ("optillm-proxy.service failed (exit-code): "
                                          "see journalctl -u optillm-proxy -b")

    def missing(argv, timeout):
        raise FileNotFoundError(2, "No such file or directory", "systemctl")

    assert unit_state.read(missing) == []
    assert unit_state.read(lambda argv, timeout: subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus")) == []
    assert unit_state.describe([]) == "" and unit_state.describe(units[1:]) == ""


def test_refused_by_a_real_closed_port():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2
    assert "connection refused" in result.output


def test_timeout_is_critical(monkeypatch):
    use_fetch(monkeypatch, raising(TimedOut("timed out")))
    result = run("--timeout", "2")
    assert result.exit_code == 2
    assert "no answer from http://127.0.0.1:4020 within 2s" in result.output


def test_hang_past_timeout_is_bounded(monkeypatch, release):
    """A handler that never returns on its own: only the whole-probe deadline can end the probe."""
    def hang(path, headers):
        release.wait(60)
        return answer(200, {})
    use_fetch(monkeypatch, hang)
    result = run("--timeout", "0.3")
    assert result.exit_code == 2
    assert "within --timeout 0.3s" in result.output


def test_real_server_that_accepts_but_never_answers():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        port = server.getsockname()[1]
        result = run("--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert result.exit_code == 2
    assert "within" in result.output and "0.5s" in result.output


class StepClock:
    """A clock the mock server advances: latency without sleeping (no timed assertions)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("latency, expected, word", [(0.2, OK, "OK"), (1.5, WARNING, "WARNING"),
                                                      (4.0, CRITICAL, "CRITICAL")])
def test_slow_answers_are_warning_then_critical(latency, expected, word):
    clock = StepClock()

    def slow(path, headers):
        clock.now += latency
        return answer(200, {"status": "ok"})

    result = probe("http://proxy", KEY, timeout=10, warning=1, critical=3,
                   fetch=slow, clock=clock)
    assert result.code == expected
    assert result.status_line().startswith(f"OPTILLM-PROXY {word} - /health 200 in {latency:.3f}s")
    assert f"time={latency:.3f}s;1;3;0" in result.status_line()


def test_json_output_has_the_same_facts(monkeypatch):
    use_fetch(monkeypatch, routes(v1_models=answer(200, {"data": []})))
    result = run("--json", "--warning", "2", "--critical", "5")
    assert result.exit_code == 0
    facts = json.loads(result.output)
    assert facts["state"] == "OK" and facts["exit_code"] == 0
    assert facts["endpoint"] == "/v1/models" and facts["http_status"] == 200
    assert facts["warning_s"] == 2 and facts["critical_s"] == 5
    assert facts["url"] == "http://127.0.0.1:4020"


def test_wait_polls_until_healthy(monkeypatch):
    calls = {"n": 0}

    def flaky(path, headers):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise Refused("connection refused")
        return answer(200, {"status": "ok"})

    use_fetch(monkeypatch, flaky)
    result = run("--wait", "30", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["attempts"] == 3


def test_wait_gives_up_with_the_last_failure(monkeypatch):
    use_fetch(monkeypatch, raising(Refused("connection refused")))
    result = run("--wait", "1")
    assert result.exit_code == 2
    assert "still not healthy after --wait 1s" in result.output


@pytest.mark.parametrize("args, needle", [
    (["--url", "not a url"], "scheme must be http or https"),
    (["--url", "ftp://127.0.0.1:4020"], "scheme must be http or https"),
    (["--url", "http://127.0.0.1:99999"], "invalid --url"),
    (["--url", "http://"], "no host"),
    (["--timeout", "0"], "--timeout must be > 0"),
    (["--timeout", "soon"], "is not a valid float"),
    (["--warning", "5", "--critical", "1"], "must not exceed --critical"),
    (["--no-such-flag"], "No such option"),
    (["--api-key", ""], "--api-key is empty"),
    (["extra-argument"], "unexpected extra argument"),
])
def test_bad_arguments_are_unknown_3(args, needle):
    result = run(*args)
    assert result.exit_code == 3, result.output
    line = result.output.strip()
    assert line.startswith("OPTILLM-PROXY UNKNOWN - ") and needle in line, line
    assert len(line.splitlines()) == 1


def test_bad_arguments_with_json_stay_json():
    result = run("--json", "--timeout", "soon")
    assert result.exit_code == 3
    assert json.loads(result.output)["state"] == "UNKNOWN"


def test_internal_error_is_unknown_without_traceback(monkeypatch):
    use_fetch(monkeypatch, raising(RuntimeError("surprise")))
    result = run()
    assert result.exit_code == 3
    assert result.output.startswith("OPTILLM-PROXY UNKNOWN - internal error: RuntimeError: surprise")


def test_other_commands_keep_clicks_usage_code():
    result = CliRunner().invoke(cli, ["runtime", "prune", "--keep", "notanumber"])
    assert result.exit_code == 2


# --- ops.probes.client ---------------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("http://127.0.0.1:4020", "http://127.0.0.1:4020"),
    ("http://127.0.0.1:4020/", "http://127.0.0.1:4020"),
    ("http://127.0.0.1:4020/v1", "http://127.0.0.1:4020"),
    (" https://proxy.example:8443/base/v1/ ", "https://proxy.example:8443/base"),
    ("http://[::1]:4020", "http://[::1]:4020"),
])
def test_parse_base_url(given, expected):
    assert parse_base_url(given) == expected


@pytest.mark.parametrize("bad", ["", "127.0.0.1:4020", "http://user:pw@host:1", "http://h:1/?q=1", "http://h:x"])
def test_parse_base_url_rejects(bad):
    with pytest.raises(UsageProblem):
        parse_base_url(bad)


def test_key_order_cli_then_env_then_file(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("opx-from-file\n")
    env = {"OPSCTL_API_KEY": "opx-from-env"}
    assert resolve_api_key("opx-cli", env, key_file).value == "opx-cli"
    assert resolve_api_key(None, env, key_file).value == "opx-from-env"
    found = resolve_api_key(None, {}, key_file)
    assert (found.value, found.source) == ("opx-from-file", str(key_file))
    missing = resolve_api_key(None, {}, tmp_path / "absent")
    assert missing.value is None and missing.headers() == {}


def test_unreadable_key_file_is_no_key(tmp_path):
    # A directory where the file should be: reading fails the way a 0600 root file fails for a
    # monitoring user (tests run as root, so chmod would not stop the read).
    (tmp_path / "api-key").mkdir()
    assert resolve_api_key(None, {}, tmp_path / "api-key").value is None


# --- the real GET (http.client) against real sockets ---------------------------------------------


class Stub:
    """A real HTTP server on a free loopback port: answers by path, records what it saw."""

    def __init__(self, routes: dict[str, tuple[int, bytes]]) -> None:
        import http.server
        import threading

        stub = self
        self.routes, self.seen = routes, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                stub.seen.append((self.path, self.headers.get("Authorization")))
                status, body = stub.routes.get(self.path, (404, b'{"error": "not found"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = Stub({"/health": (200, b'{"status": "ok"}')})
    yield server
    server.close()


def test_real_get_health_ok(stub):
    result = run("--url", stub.url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OPTILLM-PROXY OK - /health 200 in ")
    assert stub.seen == [("/health", None)]


def test_real_get_falls_back_with_the_key(stub):
    stub.routes = {"/health": (503, b"busy"), "/v1/models": (200, b'{"data": []}')}
    result = run("--url", stub.url + "/v1", "--api-key", "opx-real")
    assert result.exit_code == 0, result.output
    assert "/v1/models 200 (/health 503)" in result.output
    assert stub.seen == [("/health", None), ("/v1/models", "Bearer opx-real")]


def opsctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed entry point, as monitoring runs it: a new interpreter, `from ops.cli import main`.
    -X importtime lists every import on stderr as it happens (the fast path leaves by os._exit)."""
    return subprocess.run([sys.executable, "-X", "importtime", "-c", "from ops.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})})


def imported(done: subprocess.CompletedProcess, *names: str) -> list[str]:
    """Which of `names` the run imported, from -X importtime's lines (`import time: a | b | name`)."""
    seen = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in names if name in seen]


def test_plain_health_imports_neither_click_nor_httpx(stub):
    done = opsctl("health", "--url", stub.url, "--timeout=5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "OK"
    assert "ops.probes.health" in imported(done, "ops.probes.health"), done.stderr[-2000:]
    assert imported(done, "click", "httpx", "ops.errors", "ops.probes.command") == [], done.stderr[-2000:]


def test_plain_http_builds_no_ssl_context(stub, monkeypatch):
    """Loading the CA bundle is most of an https client's start-up; plain http needs none."""
    import ssl

    def forbidden(*args, **kwargs):
        raise AssertionError("an SSL context was built for a plain-http probe")

    monkeypatch.setattr(ssl, "create_default_context", forbidden)
    monkeypatch.setattr(ssl, "SSLContext", forbidden)
    result = run("--url", stub.url)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args", [["--url", "http://127.0.0.1:1"], ["--help"], ["--timeout", "soon"],
                                  ["--wiat", "3"], ["--url"], ["--timeout", "0"]])
def test_fast_path_and_click_answer_alike(args):
    """The fast path serves what it parses exactly as click's command does; anything else (help,
    typos, a bad number) goes to click, whose messages and exit codes stay the contract."""
    fast = opsctl("health", *args)
    clicked = run(*args)
    assert fast.returncode == clicked.exit_code, (fast, clicked.output)
    strip = re.compile(r"time=\d+\.\d+s|in \d+\.\d+s|^Usage: \S+ ", re.M)
    words = lambda text: strip.sub("", text).split()  # noqa: E731 - help wraps to the terminal
    assert words(fast.stdout) == words(clicked.output)
    went_to_click = imported(fast, "click") == ["click"]
    assert went_to_click == (args in (["--help"], ["--timeout", "soon"], ["--wiat", "3"], ["--url"]))


def test_probe_error_other_than_refused_or_timeout_is_critical(monkeypatch):
    use_fetch(monkeypatch, raising(ProbeError("RemoteDisconnected: closed")))
    result = run()
    assert result.exit_code == 2
    assert "cannot connect to http://127.0.0.1:4020: RemoteDisconnected: closed" in result.output
