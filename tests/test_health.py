"""`opsctl health`: every exit path, with httpx.MockTransport and with real sockets where cheap."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from click.testing import CliRunner

from ops.cli import cli
from ops.client import ApiKey, UsageProblem, parse_base_url, resolve_api_key
from ops.health import CRITICAL, OK, WARNING, probe
from tests.probe_helpers import hermetic, raising, release, run_cli, use_transport  # noqa: F401, F811 (fixtures)

STATUS_LINE = re.compile(r"^OPTILLM-PROXY (OK|WARNING|CRITICAL|UNKNOWN) - .+ \| time=\d+\.\d{3}s;[\d.]+;[\d.]+;0$")
KEY = ApiKey("opx-test-key", "test")


def run(*args: str, env: dict | None = None):
    return run_cli("health", *args, env=env)


def routes(**by_path):
    def handler(request: httpx.Request) -> httpx.Response:
        answer = by_path.get(request.url.path.replace("/", "_").strip("_"))
        if answer is None:
            return httpx.Response(404, json={"error": "not found"})
        return answer(request) if callable(answer) else answer
    return handler


def test_health_200_is_ok_with_perfdata(monkeypatch):
    seen = use_transport(monkeypatch, routes(health=httpx.Response(200, json={"status": "ok"})))
    result = run()
    assert result.exit_code == 0
    line = result.output.strip()
    assert STATUS_LINE.match(line), line
    assert line.startswith("OPTILLM-PROXY OK - /health 200 in ")
    assert line.endswith(";1;3;0")
    assert [r.url.path for r in seen] == ["/health"]
    assert "authorization" not in seen[0].headers  # /health needs no key: none is sent


def test_fallback_to_models_when_health_404(monkeypatch):
    seen = use_transport(monkeypatch, routes(v1_models=httpx.Response(200, json={"object": "list", "data": []})))
    result = run(env={"OPSCTL_API_KEY": "opx-from-env"})
    assert result.exit_code == 0, result.output
    assert "/v1/models 200 (/health 404)" in result.output
    assert [r.url.path for r in seen] == ["/health", "/v1/models"]
    assert seen[1].headers["authorization"] == "Bearer opx-from-env"


def test_401_on_fallback_is_critical_and_names_the_key_source(monkeypatch):
    use_transport(monkeypatch, routes(v1_models=httpx.Response(401, json={"error": "Invalid API key"})))
    result = run("--api-key", "opx-wrong")
    assert result.exit_code == 2
    assert STATUS_LINE.match(result.output.strip())
    assert "401" in result.output and "--api-key" in result.output
    assert "opx-wrong" not in result.output  # the key itself is never printed


def test_500_on_both_is_critical(monkeypatch):
    use_transport(monkeypatch, lambda r: httpx.Response(500, json={"error": "boom"}))
    result = run()
    assert result.exit_code == 2
    assert "both endpoints failed: /health 500; /v1/models 500" in result.output


def test_200_non_json_is_critical(monkeypatch):
    use_transport(monkeypatch, lambda r: httpx.Response(200, text="<html>hello</html>"))
    result = run()
    assert result.exit_code == 2
    assert "/health 200 but not JSON; /v1/models 200 but not JSON" in result.output


def test_refused_is_critical(monkeypatch):
    use_transport(monkeypatch, raising(httpx.ConnectError("[Errno 111] Connection refused")))
    result = run()
    assert result.exit_code == 2
    assert "connection refused by http://127.0.0.1:4020" in result.output


def test_refused_by_a_real_closed_port():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2
    assert "connection refused" in result.output


def test_timeout_is_critical(monkeypatch):
    use_transport(monkeypatch, raising(httpx.ReadTimeout("timed out")))
    result = run("--timeout", "2")
    assert result.exit_code == 2
    assert "no answer from http://127.0.0.1:4020 within 2s" in result.output


def test_hang_past_timeout_is_bounded(monkeypatch, release):
    """A handler that never returns on its own: only the whole-probe deadline can end the probe."""
    def hang(request):
        release.wait(60)
        return httpx.Response(200, json={})
    use_transport(monkeypatch, hang)
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

    def slow(request):
        clock.now += latency
        return httpx.Response(200, json={"status": "ok"})

    result = probe("http://proxy", KEY, timeout=10, warning=1, critical=3,
                   transport=httpx.MockTransport(slow), clock=clock)
    assert result.code == expected
    assert result.status_line().startswith(f"OPTILLM-PROXY {word} - /health 200 in {latency:.3f}s")
    assert f"time={latency:.3f}s;1;3;0" in result.status_line()


def test_json_output_has_the_same_facts(monkeypatch):
    use_transport(monkeypatch, routes(v1_models=httpx.Response(200, json={"data": []})))
    result = run("--json", "--warning", "2", "--critical", "5")
    assert result.exit_code == 0
    facts = json.loads(result.output)
    assert facts["state"] == "OK" and facts["exit_code"] == 0
    assert facts["endpoint"] == "/v1/models" and facts["http_status"] == 200
    assert facts["warning_s"] == 2 and facts["critical_s"] == 5
    assert facts["url"] == "http://127.0.0.1:4020"


def test_wait_polls_until_healthy(monkeypatch):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200, json={"status": "ok"})

    use_transport(monkeypatch, flaky)
    result = run("--wait", "30", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["attempts"] == 3


def test_wait_gives_up_with_the_last_failure(monkeypatch):
    use_transport(monkeypatch, raising(httpx.ConnectError("Connection refused")))
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
    use_transport(monkeypatch, raising(RuntimeError("surprise")))
    result = run()
    assert result.exit_code == 3
    assert result.output.startswith("OPTILLM-PROXY UNKNOWN - internal error: RuntimeError: surprise")


def test_other_commands_keep_clicks_usage_code():
    result = CliRunner().invoke(cli, ["fake-upstream", "--port", "notaport"])
    assert result.exit_code == 2


# --- ops.client ---------------------------------------------------------------------------------

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
