"""`opsctl smoke`: every exit path and the strategy-ran signal, with httpx.MockTransport.

The mock answers use the two shapes a real 0.3.12 produces (tests/probes/test_probes_real.py proves them
against the real server): the upstream's pass-through body, and the body optillm builds itself.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

import ops.probes.client
import ops.probes.smoke
from ops.from_launcher.layout import Layout
from ops.probes.smoke import KEY_CHECK_SECONDS, approach_of, models_to_check, plugin_slugs_from_env
from tests.probe_helpers import hermetic, raising, release, run_cli, use_transport  # noqa: F401, F811 (fixtures)

ALL = ["jerry-xl", "moa-jerry-xl", "bon-jerry-xl", "plansearch-jerry-xl", "self_consistency-jerry-xl"]


def pass_through_body(model: str, tokens: int = 7) -> dict:
    """What the upstream answers and 0.3.12 returns unchanged for approach none / proxy."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ready"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}}


def strategy_body(model: str, tokens: int = 35, content: str = "ready") -> dict:
    """What 0.3.12 builds itself after running a strategy (server.py response_data)."""
    return {"model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}],
            "usage": {"completion_tokens": tokens, "completion_tokens_details": {"reasoning_tokens": 0}}}


def auto_mode(request: httpx.Request) -> httpx.Response:
    model = json.loads(request.content)["model"]
    if approach_of(model) in (None, "proxy"):
        return httpx.Response(200, json=pass_through_body(model))
    return httpx.Response(200, json=strategy_body(model.split("-", 1)[1]))


def proxy_mode(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=pass_through_body(json.loads(request.content)["model"]))


def run(*args: str, env: dict | None = None):
    return run_cli("smoke", *args, env=env)


def rows_of(output: str) -> dict[str, list[str]]:
    """The table's rows, by model."""
    lines = output.splitlines()
    assert lines[0].split() == ["MODEL", "RESULT", "LATENCY", "TOKENS", "STRATEGY", "RAN"]
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        if len(cells) == 5 and not line.startswith(("note:", "smoke ")) and ":" not in cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_all_passes_in_auto_mode_and_sends_small_deterministic_requests(monkeypatch, tmp_path):
    seen = use_transport(monkeypatch, auto_mode)
    result = run("--all", "--env-file", str(tmp_path / "absent"), env={"OPSCTL_API_KEY": "opx-env-key"})
    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert list(rows) == ALL
    assert rows["jerry-xl"][0] == "pass" and rows["jerry-xl"][3] == "-"
    for model in ALL[1:]:
        assert rows[model][0] == "pass" and rows[model][3] == "yes", rows[model]
        assert rows[model][2] == "35"
    assert "5/5 passed" in result.output
    for request in seen:
        body = json.loads(request.content)
        assert request.url.path == "/v1/chat/completions"
        assert body["temperature"] == 0 and body["max_tokens"] <= 64
        assert request.headers["authorization"] == "Bearer opx-env-key"


def test_proxy_mode_is_skipped_and_named(monkeypatch):
    use_transport(monkeypatch, proxy_mode)
    result = run("--all", "--env-file", "/nonexistent/env")
    assert result.exit_code == 1
    rows = rows_of(result.output)
    assert rows["jerry-xl"][0] == "pass"
    for model in ALL[1:]:
        assert rows[model][0] == "SKIPPED" and rows[model][3] == "NO"
        assert f"{model}: strategy {approach_of(model)} did not run" in result.output
    assert "strategy skipped: " + ", ".join(ALL[1:]) in result.output


def test_json_has_the_same_rows(monkeypatch):
    use_transport(monkeypatch, proxy_mode)
    result = run("jerry-xl", "moa-jerry-xl", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["exit_code"] == 1 and report["passed"] is False
    assert [(r["model"], r["result"], r["strategy_ran"], r["completion_tokens"]) for r in report["rows"]] == [
        ("jerry-xl", "pass", None, 7), ("moa-jerry-xl", "skipped", False, 7)]
    assert isinstance(report["rows"][0]["latency_s"], float)


def test_refused_is_unreachable_2(monkeypatch):
    seen = use_transport(monkeypatch, raising(httpx.ConnectError("[Errno 111] Connection refused")))
    result = run("--all", "--env-file", "/nonexistent/env")
    assert result.exit_code == 2
    assert "proxy unreachable at http://127.0.0.1:4020" in result.output
    assert len(seen) == 1  # no point asking four more times


def test_real_closed_port_is_unreachable_2():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("jerry-xl", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2
    assert "Connection refused" in result.output


def test_timeout_fails_1(monkeypatch):
    use_transport(monkeypatch, raising(httpx.ReadTimeout("timed out")))
    result = run("moa-jerry-xl", "--timeout", "5")
    assert result.exit_code == 1
    assert "moa-jerry-xl: no answer within --timeout 5s" in result.output


def test_hang_past_timeout_fails_1(monkeypatch, release):
    def hang(request):
        release.wait(60)
        return auto_mode(request)
    use_transport(monkeypatch, hang)
    result = run("bon-jerry-xl", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "bon-jerry-xl: no answer within --timeout 0.3s" in result.output


def test_401_names_where_the_key_came_from(monkeypatch, tmp_path):
    use_transport(monkeypatch, lambda r: httpx.Response(401, json={"error": "Invalid API key"}))
    result = run("jerry-xl")
    assert result.exit_code == 1
    assert "401: the proxy rejected the key from none (no --api-key, no $OPSCTL_API_KEY" in result.output


def test_key_file_is_used_when_readable(monkeypatch, tmp_path):
    layout = Layout(tmp_path / "root")
    layout.key_file.parent.mkdir(parents=True)
    layout.key_file.write_text("opx-from-key-file\n")
    monkeypatch.setattr(ops.probes.client, "DEFAULT", layout)
    seen = use_transport(monkeypatch, auto_mode)
    assert run("jerry-xl").exit_code == 0
    assert seen[0].headers["authorization"] == "Bearer opx-from-key-file"


@pytest.mark.parametrize("error_text", ["Connection error.",
                                        "Error code: 500 - {'error': {'message': 'injected failure'}}"])
def test_upstream_failure_as_500_names_the_upstream(monkeypatch, error_text):
    use_transport(monkeypatch, lambda r: httpx.Response(500, json={"error": error_text}))
    result = run("jerry-xl", "plansearch-jerry-xl")
    assert result.exit_code == 1
    assert f"plansearch-jerry-xl: upstream error via proxy (500): {error_text}" in result.output


def test_upstream_failure_swallowed_by_a_strategy_names_the_upstream(monkeypatch):
    """moa/bon answer 200 with 0 completion tokens when every upstream call failed (seen on 0.3.12)."""
    use_transport(monkeypatch, lambda r: httpx.Response(200, json=strategy_body(
        "jerry-xl", tokens=0, content="Error: Could not generate any completions")))
    result = run("moa-jerry-xl")
    assert result.exit_code == 1
    assert "moa-jerry-xl: upstream error via proxy: moa got no completion from the upstream" in result.output
    assert rows_of(result.output)["moa-jerry-xl"][0] == "FAIL"


def test_other_500_is_a_proxy_error(monkeypatch):
    use_transport(monkeypatch, lambda r: httpx.Response(500, json={"error": "'NoneType' object is not iterable"}))
    result = run("moa-jerry-xl")
    assert result.exit_code == 1
    assert "moa-jerry-xl: proxy answered 500: 'NoneType' object is not iterable" in result.output


@pytest.mark.parametrize("response, needle", [
    (httpx.Response(200, text="<html>ok</html>"), "200 but the body is not JSON"),
    (httpx.Response(200, json={"choices": []}), "200 but not an OpenAI chat completion: no choices"),
    (httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": " "}}]}),
     "empty assistant content"),
    (httpx.Response(200, json=[1, 2]), "top level is not an object"),
    (httpx.Response(404, json={"error": {"message": "no route"}}), "proxy answered 404: no route"),
])
def test_bad_answers_fail_1(monkeypatch, response, needle):
    use_transport(monkeypatch, lambda r: response)
    result = run("jerry-xl")
    assert result.exit_code == 1
    assert needle in result.output and "jerry-xl: " in result.output


def test_plugin_prefixes_from_env_file_and_option(monkeypatch, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("OPENAI_API_KEY=upstream\nPROXY_PLUGINS=majority_voting,executecode\n")
    seen = use_transport(monkeypatch, auto_mode)
    result = run("--all", "--env-file", str(env_file), "--plugin", "proxy")
    assert result.exit_code == 0, result.output
    # The models run at once: the order they reach the upstream is the scheduler's (the table's
    # order is the test of rows keeping theirs); each is asked exactly once.
    asked = sorted(json.loads(r.content)["model"] for r in seen)
    assert asked == sorted(ALL + ["majority_voting-jerry-xl", "executecode-jerry-xl", "proxy-jerry-xl"])
    rows = rows_of(result.output)
    assert rows["majority_voting-jerry-xl"][3] == "yes"
    assert rows["proxy-jerry-xl"][3] == "-"  # the proxy plugin forwards by design


def test_plugin_answer_passed_through_is_skipped(monkeypatch):
    use_transport(monkeypatch, proxy_mode)
    result = run("--plugin", "majority_voting", "--base-model", "other-model")
    assert result.exit_code == 1
    assert "majority_voting-other-model: strategy majority_voting did not run" in result.output


@pytest.mark.parametrize("content, slugs, has_note", [
    ("PROXY_PLUGINS=none\n", [], False),
    ("PROXY_PLUGINS='json, memory'\n", ["json", "memory"], False),
    ("PROXY_PLUGINS=all\n", [], True),
    ("OPENAI_API_KEY=x\n", [], False),
    # Parsed as the launcher parses it: a setting it refuses adds no prefixes, and says why.
    ("PROXY_PLUGINS=json,nosuch\n", [], True),
    # Read as systemd reads it: a backslash continues the line.
    ("PROXY_PLUGINS=json,\\\nmemory\n", ["json", "memory"], False),
])
def test_plugin_slugs_from_env(tmp_path, content, slugs, has_note):
    env_file = tmp_path / "env"
    env_file.write_text(content)
    found, note = plugin_slugs_from_env(env_file)
    assert found == slugs and bool(note) == has_note


def test_unreadable_env_file_is_a_note_not_a_failure(tmp_path):
    found, note = plugin_slugs_from_env(tmp_path / "missing")
    assert found == [] and "use --plugin SLUG" in note


def test_models_to_check_dedups_and_orders():
    assert models_to_check(("moa-jerry-xl",), True, "jerry-xl", ("json",), ["json"]) == [
        "moa-jerry-xl", "jerry-xl", "bon-jerry-xl", "plansearch-jerry-xl", "self_consistency-jerry-xl",
        "json-jerry-xl"]


@pytest.mark.parametrize("model, approach", [("jerry-xl", None), ("moa-jerry-xl", "moa"),
                                             ("self_consistency-jerry-xl", "self_consistency"),
                                             ("gpt-4o", None), ("majority_voting-x", "majority_voting")])
def test_approach_of(model, approach):
    assert approach_of(model) == approach


@pytest.mark.parametrize("args, needle", [
    ([], "name at least one MODEL"),
    (["jerry-xl", "--url", "localhost:4020"], "scheme must be http or https"),
    (["jerry-xl", "--timeout", "0"], "--timeout must be > 0"),
    (["jerry-xl", "--timeout", "later"], "is not a valid float"),
    (["--plugin", "nope"], "unknown plugin slug(s) nope"),
    (["jerry-xl", "--frobnicate"], "No such option"),
])
def test_usage_errors_exit_3_with_one_line(args, needle):
    result = run(*args)
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("opsctl smoke: "), lines


def test_internal_error_is_one_line(monkeypatch):
    use_transport(monkeypatch, raising(RuntimeError("surprise")))
    result = run("jerry-xl")
    assert result.exit_code == 1
    assert result.output.strip() == "opsctl smoke: internal error: RuntimeError: surprise"


# --- a wrong key: once, one line -----------------------------------------------------------------


def test_wrong_key_is_one_line_and_no_other_model_is_sent(monkeypatch):
    seen = use_transport(monkeypatch, lambda r: httpx.Response(401, json={"error": "Invalid API key"}))
    result = run("--all", "--env-file", "/nonexistent/env", env={"OPSCTL_API_KEY": "opx-wrong"})
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "smoke http://127.0.0.1:4020: 401: the proxy rejected the key from $OPSCTL_API_KEY; pass --api-key "
        "or set OPSCTL_API_KEY to the proxy key (no model checked)"]
    assert len(seen) == 1  # the first model goes alone until it answered: the 401 stops the run


def test_wrong_key_answered_slowly_is_still_reported_once(monkeypatch):
    """A 401 that comes after the first model's moment alone: the others were sent, the line is one."""
    def slow_401(request):
        time.sleep(KEY_CHECK_SECONDS + 0.3)
        return httpx.Response(401, json={"error": "Invalid API key"})
    seen = use_transport(monkeypatch, slow_401)
    result = run("--all", "--env-file", "/nonexistent/env", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["key_rejected"].startswith("401: the proxy rejected the key from none")
    assert [r["model"] for r in report["rows"]] == ALL and len(seen) == len(ALL)
    assert [bool(r["detail"]) for r in report["rows"]] == [True, False, False, False, False]


# --- concurrency: bounded, rows in order, the whole run bounded by --timeout ----------------------


def test_models_run_at_once_up_to_concurrency_and_rows_keep_their_order(monkeypatch):
    plugins = ["majority_voting", "executecode", "json"]
    models = ALL + [f"{p}-jerry-xl" for p in plugins]
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def answer(request):
        model = json.loads(request.content)["model"]
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05 * (len(models) - models.index(model)))  # the first named answers last
        with lock:
            state["now"] -= 1
        return auto_mode(request)
    seen = use_transport(monkeypatch, answer)
    args = ["--all", "--env-file", "/nonexistent/env", *[a for p in plugins for a in ("--plugin", p)]]
    result = run(*args, "--concurrency", "3")
    assert result.exit_code == 0, result.output
    assert list(rows_of(result.output)) == models
    assert state["max"] == 3 and len(seen) == len(models)

    state["max"] = 0
    result = run(*args)  # default: 5 at a time
    assert result.exit_code == 0, result.output
    assert list(rows_of(result.output)) == models and state["max"] == ops.probes.smoke.DEFAULT_CONCURRENCY


def test_hung_proxy_costs_timeout_once_not_once_per_model(monkeypatch, release):
    def hang(request):
        release.wait(60)
        return auto_mode(request)
    seen = use_transport(monkeypatch, hang)
    started = time.monotonic()
    result = run("--all", "--env-file", "/nonexistent/env", "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert 1.0 <= elapsed < 2.0, elapsed  # one after another: 5 s
    assert len(seen) == len(ALL)
    for model in ALL:
        assert f"{model}: no answer within --timeout 1s" in result.output
    result, latency = rows_of(result.output)[ALL[0]][:2]
    assert result == "FAIL" and abs(float(latency.rstrip("s")) - 1.0) < 0.05, latency


def test_models_never_started_within_timeout_say_so(monkeypatch, release):
    def hang(request):
        release.wait(60)
        return auto_mode(request)
    seen = use_transport(monkeypatch, hang)
    result = run("--all", "--env-file", "/nonexistent/env", "--timeout", "0.6", "--concurrency", "2", "--json")
    assert result.exit_code == 1
    rows = json.loads(result.output)["rows"]
    assert [r["model"] for r in rows] == ALL and len(seen) == 2
    assert [r["detail"] for r in rows[:2]] == ["no answer within --timeout 0.6s"] * 2
    for row in rows[2:]:
        assert row["result"] == "fail" and row["detail"].startswith("not started: the run's --timeout 0.6s ran out")


def test_hung_upstream_over_real_http_is_bounded_by_timeout():
    """The recording upstream, delayed, stands in for a proxy whose LiteLLM hangs: real sockets,
    real threads, the run ends at --timeout."""
    from tests.fixtures.upstream import start_upstream

    upstream, stop = start_upstream()
    # The delayed answers, released at the end, meet connections smoke gave up on: not an error here.
    upstream._server.handle_error = lambda request, client_address: None
    upstream.delay(30)
    try:
        started = time.monotonic()
        result = run("--all", "--env-file", "/nonexistent/env", "--timeout", "1",
                     "--url", upstream.base_url.removesuffix("/v1"))
        elapsed = time.monotonic() - started
        asked = [c["model"] for c in upstream.calls()]
    finally:
        upstream.reset()  # releases the delayed answers
        stop()
    assert result.exit_code == 1, result.output
    assert 1.0 <= elapsed < 2.5, elapsed
    assert all(f"{m}: no answer within --timeout 1s" in result.output for m in ALL), result.output
    assert sorted(asked) == sorted(ALL)  # all five were asked, at once


def test_concurrency_default_and_bad_value():
    from ops.cli import cli

    param = next(p for p in cli.commands["smoke"].params if p.name == "concurrency")
    assert param.default == ops.probes.smoke.DEFAULT_CONCURRENCY
    result = run("jerry-xl", "--concurrency", "0")
    assert result.exit_code == 3 and "--concurrency" in result.output


# --- the launcher's own answers ---------------------------------------------------------------------


def test_policy_refusal_is_reported_with_its_rule(monkeypatch):
    body = {"error": {"message": "refused by optillm-proxy policy (approach-not-allowed): the approach 'moa' "
                                 "is not in PROXY_APPROACHES", "type": "invalid_request_error",
                      "code": "approach-not-allowed"}}
    use_transport(monkeypatch, lambda r: httpx.Response(400, json=body) if b"moa-" in r.content else auto_mode(r))
    result = run("jerry-xl", "moa-jerry-xl")
    assert result.exit_code == 1
    assert ("moa-jerry-xl: proxy answered 400: refused by optillm-proxy policy (approach-not-allowed): "
            "the approach 'moa' is not in PROXY_APPROACHES (never sent to optillm)") in result.output
    assert result.output.splitlines()[-1].endswith("; refused by policy: moa-jerry-xl (approach-not-allowed)")
    rows = json.loads(run("jerry-xl", "moa-jerry-xl", "--json").output)["rows"]
    assert [r["policy_rule"] for r in rows] == [None, "approach-not-allowed"]


@pytest.mark.parametrize("status, kind, code, hint", [
    (502, "upstream_error", "upstream_key_refused", "check /etc/optillm-proxy/upstream-key"),
    (429, "upstream_error", "upstream_rate_limited", "LiteLLM rate-limits the proxy's key"),
    (400, "invalid_request_error", "upstream_rejected", "does LiteLLM route the base model?"),
    (504, "deadline_exceeded", "deadline_exceeded", None),
    (504, "upstream_timeout", "upstream_timeout", None),
])
def test_launcher_upstream_errors_name_the_upstream(monkeypatch, status, kind, code, hint):
    message = ("upstream error: the upstream refused this proxy's credentials (HTTP 401); 1 of 1 upstream call(s) "
               "failed; 3 more not sent after HTTP 401 (the proxy's journal has the detail, request 4-7748aeb3)")
    use_transport(monkeypatch, lambda r: httpx.Response(status, json={"error": {
        "message": message, "type": kind, "code": code}}))
    result = run("bon-jerry-xl")
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("bon-jerry-xl: "))
    assert line.startswith(f"bon-jerry-xl: upstream error via proxy ({status}): {message}"), line
    assert (hint in line) if hint else line.endswith(message), line
