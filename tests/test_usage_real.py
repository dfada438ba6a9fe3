"""The answer's usage against real optillm 0.3.12 (lean runtime from our lock) through the launcher.

For each routed strategy and the base model: the usage the client reads equals the recording
upstream's own count summed over the calls it answered, the x-optillm-proxy-upstream-calls header
equals the calls it saw, and the request's record, the /metrics counters and `opsctl report` say the
same. Streams with and without include_usage; a failed-then-retried call counted once;
PROXY_USAGE=stock gives optillm's own figure back (the "stock" numbers printed next to "now").
Unit-level versions: tests/test_usage.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from ops.from_launcher.layout import BASE_MODEL, STRATEGY_PREFIXES
from tests.probe_helpers import opsctl_bin
from tests.test_request_path import KEY, chat, launch, post

pytestmark = pytest.mark.real

CALLS_HEADER = "x-optillm-proxy-upstream-calls"
MODELS = {BASE_MODEL: "none", **{f"{p}-{BASE_MODEL}": p for p in STRATEGY_PREFIXES}}
MODELS_CALLS = {BASE_MODEL: 1, f"moa-{BASE_MODEL}": 3}
RECORD = re.compile(r"^optillm-proxy-record (\{.*\})$", re.M)


@pytest.fixture(scope="module")
def proxy(lean_runtime, upstream_session, tmp_path_factory):
    server = launch(lean_runtime, tmp_path_factory.mktemp("usage"), upstream_session.base_url, UPSTREAM_RETRIES="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stock_proxy(lean_runtime, upstream_session, tmp_path_factory):
    server = launch(lean_runtime, tmp_path_factory.mktemp("usage-stock"), upstream_session.base_url,
                    PROXY_USAGE="stock")
    yield server
    server.stop()


def records(text: str) -> list[dict]:
    return [json.loads(m) for m in RECORD.findall(text)]


def token_counters(proxy) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    return {(a, k): float(v) for a, k, v in
            re.findall(r'^optillm_proxy_upstream_tokens_total\{approach="([^"]+)",kind="([^"]+)"\} (\S+)$', text, re.M)}


def plain_usage(answer: dict) -> dict:
    return {k: answer["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def test_each_answer_reports_what_the_upstream_counted_and_records_metrics_and_report_agree(
        proxy, upstream, tmp_path):
    log_start = len(proxy.log_text())
    before = token_counters(proxy)
    seen = {}
    for model, approach in MODELS.items():
        upstream.reset()
        r = post(proxy, chat(model))
        assert r.status_code == 200, r.text
        answer, calls = r.json(), upstream.calls()
        want = upstream.usage()
        assert want["prompt_tokens"] > 0 and want["completion_tokens"] > 0
        assert plain_usage(answer) == want, (model, answer["usage"], calls)
        assert r.headers[CALLS_HEADER] == str(len(calls)), model
        if approach == "none":  # the upstream's own body, untouched
            assert "optillm_reported" not in answer["usage"] and answer["object"] == "chat.completion"
        else:
            assert "completion_tokens" in answer["usage"]["optillm_reported"], answer["usage"]
        seen[approach] = (want, len(calls))
        print(f"\n{model}: {len(calls)} upstream calls, usage {plain_usage(answer)}, "
              f"optillm_reported {answer['usage'].get('optillm_reported')}")

    # The record of each request (stderr lines outside systemd) carries the same figures.
    mine = [rec for rec in records(proxy.log_text()[log_start:]) if rec["OPTILLM_PROXY_PATH"] == "/v1/chat/completions"]
    assert [rec["OPTILLM_PROXY_APPROACH"] for rec in mine] == list(seen)
    for rec in mine:
        want, calls = seen[rec["OPTILLM_PROXY_APPROACH"]]
        assert (int(rec["OPTILLM_PROXY_UPSTREAM_CALLS"]), int(rec["OPTILLM_PROXY_UPSTREAM_PROMPT_TOKENS"]),
                int(rec["OPTILLM_PROXY_UPSTREAM_COMPLETION_TOKENS"])) == (
            calls, want["prompt_tokens"], want["completion_tokens"]), rec

    after = token_counters(proxy)
    for approach, (want, _) in seen.items():
        for kind in ("prompt", "completion"):
            got = after[(approach, kind)] - before.get((approach, kind), 0.0)
            assert got == want[f"{kind}_tokens"], (approach, kind, got, want)

    # opsctl report over exactly these records: tokens per request = the answer's total_tokens.
    records_file = tmp_path / "records.log"
    records_file.write_text(proxy.log_text()[log_start:])
    proc = subprocess.run([opsctl_bin(), "report", "--input", str(records_file), "--json"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {row["approach"]: row for row in json.loads(proc.stdout)["approaches"]}
    for approach, (want, calls) in seen.items():
        assert rows[approach]["requests"] == 1
        assert rows[approach]["upstream_tokens_per_request"] == want["total_tokens"], rows[approach]
        assert rows[approach]["upstream_calls_per_request"] == calls


def sse_chunks(text: str) -> list:
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]", events
    return [json.loads(e[len("data: "):]) for e in events[:-1]]


@pytest.mark.parametrize("model", [f"moa-{BASE_MODEL}", BASE_MODEL])
def test_a_stream_with_include_usage_ends_with_the_same_usage(proxy, upstream, model):
    r = post(proxy, chat(model, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    chunks = sse_chunks(r.text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == upstream.usage(), chunks[-1]
    assert all(c["usage"] is None and c["choices"] for c in chunks[:-1]), chunks
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    # The option is the proxy's: no upstream call carries it (0.3.12 passes it on for the base model).
    assert all("stream_options" not in c["fields"] and "stream" not in c["fields"] for c in upstream.calls())
    assert r.headers[CALLS_HEADER] == str(len(upstream.calls()))


def test_a_stream_without_include_usage_is_stock(proxy, stock_proxy, upstream):
    ours = post(proxy, chat(f"moa-{BASE_MODEL}", stream=True))
    theirs = post(stock_proxy, chat(f"moa-{BASE_MODEL}", stream=True))
    for r in (ours, theirs):
        assert r.status_code == 200, r.text
    strip = lambda chunks: [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]  # noqa: E731
    assert strip(sse_chunks(ours.text)) == strip(sse_chunks(theirs.text))
    assert all("usage" not in c for c in sse_chunks(ours.text))


@pytest.mark.parametrize("model", [BASE_MODEL, f"moa-{BASE_MODEL}"])
def test_a_call_that_failed_and_was_retried_counts_once(proxy, upstream, model):
    """The first attempt answers 500 (no usage), its retry 200: the answer counts what was answered."""
    upstream.fail_with(500, times=1)
    r = post(proxy, chat(model))
    assert r.status_code == 200, r.text
    calls = upstream.calls()
    assert len(calls) == MODELS_CALLS[model] + 1 and [c["usage"] is None for c in calls].count(True) == 1, calls
    assert plain_usage(r.json()) == upstream.usage()
    assert r.headers[CALLS_HEADER] == str(len(calls))


def test_stock_setting_gives_optillms_own_figure(stock_proxy, upstream):
    for model, approach in MODELS.items():
        upstream.reset()
        r = post(stock_proxy, chat(model))
        assert r.status_code == 200, r.text
        stock = r.json()["usage"]
        assert r.headers[CALLS_HEADER] == str(len(upstream.calls()))
        if approach == "none":
            assert stock == {**upstream.usage(), **stock}  # the upstream's own body
        else:
            assert "prompt_tokens" not in stock and "optillm_reported" not in stock, stock
        print(f"\nstock {model}: usage {stock}; upstream counted {upstream.usage()}")
