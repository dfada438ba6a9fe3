"""The answer's usage is what the request spent upstream (fast tier: no optillm, no network).

usage.py on its own (JSON and SSE rewriting, malformed and absent usage, pass-through, stock mode),
then through the gateway with a stand-in for optillm's Flask app, then the transport's count of a
retried call. The same against real optillm 0.3.12 is tests/test_usage_real.py; through a real
LiteLLM, tests/test_chain_usage.py.
"""

from __future__ import annotations

import io
import json
import threading

import httpx
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from optillm_proxy_launcher import routes, settings, usage
from optillm_proxy_launcher.gateway import Gate
from optillm_proxy_launcher.upstream import Registry, RequestContext
from tests.test_request_policy import KEY, Scripted, call, chat, check, make_policy, new_ctx, transport_for

# optillm 0.3.12's strategy answer (server.py proxy(): response_data) and its stream
# (generate_streaming_response), as it builds them.
STOCK_USAGE = {"completion_tokens": 21, "completion_tokens_details": {"reasoning_tokens": 0}}
STRATEGY_ANSWER = {"model": "jerry-xl", "choices": [{"index": 0, "message": {"role": "assistant",
                   "content": "The answer is 42."}, "finish_reason": "stop"}], "usage": STOCK_USAGE}
CHUNK = {"id": "chatcmpl-1700000000000", "object": "chat.completion.chunk", "created": 1700000000,
         "model": "jerry-xl", "choices": [{"delta": {"role": "assistant", "content": "The answer is 42."},
                                           "index": 0, "finish_reason": "stop"}]}
STREAM = ["data: " + json.dumps(CHUNK) + "\n\n", "data: [DONE]\n\n"]
PASS_THROUGH_ANSWER = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "jerry-xl",
                       "choices": STRATEGY_ANSWER["choices"],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                                 "prompt_tokens_details": {"cached_tokens": 0}}}
COST = usage.Spent(calls=3, prompt_tokens=30, completion_tokens=35)


def ctx_with(calls=3, prompt=30, completion=35) -> RequestContext:
    ctx = new_ctx()
    ctx.calls, ctx.ok, ctx.prompt_tokens, ctx.completion_tokens = calls, calls, prompt, completion
    return ctx


def events(data: bytes) -> list[bytes]:
    return [e for e in data.split(b"\n\n") if e]


def chunks_of(data: bytes) -> list:
    return [json.loads(e[len(b"data: "):]) for e in events(data) if e != b"data: [DONE]"]


# --- usage.py ------------------------------------------------------------------------------------


def test_a_strategy_answer_reports_the_upstream_sum_and_keeps_optillms_figure():
    out = json.loads(usage.rewrite_json(json.dumps(STRATEGY_ANSWER).encode(), COST))
    assert out["usage"] == {"prompt_tokens": 30, "completion_tokens": 35, "total_tokens": 65,
                            usage.REPORTED_FIELD: STOCK_USAGE}
    assert {k: v for k, v in out.items() if k != "usage"} == {k: v for k, v in STRATEGY_ANSWER.items() if k != "usage"}
    # No id/object/created added: opsctl smoke still tells a strategy's answer from a pass-through.
    assert not {"id", "object", "created"} & set(out)


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}",
                                 b'{"error": "Connection error."}', b'{"choices": "x"}'],
                         ids=["empty", "text", "not utf-8", "list", "string", "no choices", "error", "bad choices"])
def test_what_is_not_a_chat_completion_is_left_alone(raw):
    assert usage.rewrite_json(raw, COST) is None


@pytest.mark.parametrize("stock", [None, "broken", 7, {"completion_tokens": "x"}], ids=str)
def test_absent_or_malformed_stock_usage_is_replaced_and_kept_as_it_was(stock):
    body = {**STRATEGY_ANSWER, "usage": stock}
    if stock is None:
        del body["usage"]
    out = json.loads(usage.rewrite_json(json.dumps(body).encode(), COST))
    assert out["usage"] == {**COST.usage(), usage.REPORTED_FIELD: stock}


@pytest.mark.parametrize("body,want", [
    (chat(stream=True, stream_options={"include_usage": True}), True),
    (chat(stream=True, stream_options={"include_usage": False}), False),
    (chat(stream=True, stream_options={}), False),
    (chat(stream=True), False),
    (chat(stream=False, stream_options={"include_usage": True}), False),
    (chat(stream_options={"include_usage": True}), False),
], ids=["asked", "declined", "empty options", "no options", "not streamed", "stream absent"])
def test_only_a_streamed_request_with_include_usage_gets_the_usage_chunk(body, want):
    assert usage.wants_stream_usage(body) is want


def test_stream_options_are_taken_out_of_what_optillm_sees():
    raw = json.dumps(chat()).encode()
    assert usage.without_stream_options(chat(), raw) is raw
    body = chat(stream=True, stream_options={"include_usage": True})
    assert json.loads(usage.without_stream_options(body, json.dumps(body).encode())) == chat(stream=True)


def stream_through(parts, cost=COST) -> bytes:
    wrapped = usage.StreamWithUsage(parts, lambda: cost, "moa-jerry-xl")
    return b"".join(wrapped)


def test_the_stream_ends_with_openais_usage_chunk_before_done():
    out = stream_through([s.encode() for s in STREAM])
    assert events(out)[-1] == b"data: [DONE]"
    first, last = chunks_of(out)
    assert first == {**CHUNK, "usage": None}  # OpenAI: every other chunk carries usage null
    assert last == {"id": CHUNK["id"], "object": "chat.completion.chunk", "created": CHUNK["created"],
                    "model": "jerry-xl", "choices": [], "usage": COST.usage()}


def test_a_stream_without_done_gets_no_usage_chunk():
    out = stream_through([STREAM[0].encode()])
    assert [c.get("choices") == [] for c in chunks_of(out)] == [False]


sse_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@hsettings(max_examples=60, deadline=None)
@given(contents=st.lists(sse_texts, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_usage_chunk_comes_once_before_done_however_the_bytes_are_cut(contents, cuts):
    """The invariant for any answer optillm streams, cut into any pieces by the server: every content
    chunk comes out once, in order, then exactly one usage chunk, then [DONE]."""
    chunks = [{**CHUNK, "choices": [{"delta": {"content": c}, "index": i, "finish_reason": "stop"}]}
              for i, c in enumerate(contents)]
    data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    parts = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    out = stream_through(parts)
    got = chunks_of(out)
    assert got[:-1] == [{**c, "usage": None} for c in chunks]
    assert got[-1]["choices"] == [] and got[-1]["usage"] == COST.usage()
    assert events(out)[-1] == b"data: [DONE]" and out.count(b"data: [DONE]") == 1


# --- through the gateway -------------------------------------------------------------------------


class Optillm:
    """Stands in for optillm's Flask app: runs `calls` upstream calls' worth of accounting, then
    answers like 0.3.12 (a strategy's JSON, a pass-through body, or a stream)."""

    def __init__(self, answer, *, calls=3, prompt=30, completion=35, status=200, stream=False):
        self.answer, self.status, self.stream = answer, status, stream
        self.calls, self.prompt, self.completion = calls, prompt, completion
        self.closed = False

    def __call__(self, environ, start_response):
        self.body = json.loads(environ["wsgi.input"].read())
        ctx = environ["optillm_proxy.request"]
        with ctx.lock:
            ctx.calls, ctx.ok = self.calls, self.calls
            ctx.prompt_tokens, ctx.completion_tokens = self.prompt, self.completion
        if self.stream:
            start_response(f"{self.status} OK", [("Content-Type", "text/event-stream; charset=utf-8")])
            return self._closing([s.encode() for s in STREAM])
        data = json.dumps(self.answer).encode()
        start_response(f"{self.status} OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return self._closing([data])

    def _closing(self, parts):
        app = self

        class Result(list):
            def close(self):
                app.closed = True
        return Result(parts)


def guarded(app, policy):
    """`app` behind the launcher's own chat-view admission (routes.admit), as optillm's view is:
    the stand-in then reads the body stock's get_json() would parse."""
    from werkzeug.wrappers import Request

    def view(environ, start_response):
        request = Request(environ)
        assert routes.admit(request, policy) is None
        environ["wsgi.input"] = io.BytesIO(request.get_data())
        return app(environ, start_response)
    return view


def serve(app, body: dict, **env):
    registry = Registry()
    policy = make_policy(**env)
    gate = Gate(guarded(app, policy), policy, registry, "http://127.0.0.1:4000/v1")
    raw = json.dumps(body).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw), "HTTP_AUTHORIZATION": f"Bearer {KEY}"}
    seen = {}
    out = gate(environ, lambda status, headers, exc_info=None: seen.update(status=status, headers=headers))
    data = b"".join(out)
    out.close()
    assert registry.in_flight() == 0 and app.closed
    headers = {k.lower(): v for k, v in seen["headers"]}
    if "content-length" in headers:
        assert int(headers["content-length"]) == len(data)
    return int(seen["status"].split()[0]), headers, data


def test_gateway_answers_a_strategy_with_the_upstream_sum_and_the_calls_header():
    status, headers, data = serve(Optillm(STRATEGY_ANSWER), chat("moa-jerry-xl"))
    assert status == 200 and headers[usage.CALLS_HEADER] == "3"
    assert json.loads(data)["usage"] == {**COST.usage(), usage.REPORTED_FIELD: STOCK_USAGE}


def test_gateway_leaves_a_pass_through_body_as_the_upstream_sent_it():
    """Approach none: optillm returns the upstream's own body, whose usage is the one call's: counting
    it again from the transport would say the same or, summed, twice."""
    app = Optillm(PASS_THROUGH_ANSWER, calls=1, prompt=10, completion=7)
    status, headers, data = serve(app, chat("jerry-xl"))
    assert json.loads(data) == PASS_THROUGH_ANSWER and headers[usage.CALLS_HEADER] == "1"


def test_stock_setting_restores_optillms_usage_and_stream():
    status, headers, data = serve(Optillm(STRATEGY_ANSWER), chat("moa-jerry-xl"), PROXY_USAGE="stock")
    assert json.loads(data) == STRATEGY_ANSWER and headers[usage.CALLS_HEADER] == "3"
    body = chat("moa-jerry-xl", stream=True, stream_options={"include_usage": True})
    _, _, data = serve(Optillm(None, stream=True), body, PROXY_USAGE="stock")
    assert data == "".join(STREAM).encode()


def test_a_stream_with_include_usage_ends_with_the_usage_chunk_and_optillm_never_sees_the_option():
    app = Optillm(None, stream=True)
    body = chat("moa-jerry-xl", stream=True, stream_options={"include_usage": True})
    status, headers, data = serve(app, body)
    assert status == 200 and headers[usage.CALLS_HEADER] == "3"
    assert chunks_of(data)[-1]["usage"] == COST.usage() and events(data)[-1] == b"data: [DONE]"
    assert "stream_options" not in app.body and app.body["stream"] is True


def test_a_stream_without_include_usage_is_byte_for_byte_optillms():
    for body in (chat("moa-jerry-xl", stream=True), chat("moa-jerry-xl", stream=True, stream_options={})):
        _, _, data = serve(Optillm(None, stream=True), body)
        assert data == "".join(STREAM).encode()


def test_a_pass_through_stream_with_include_usage_reports_its_one_call():
    body = chat("jerry-xl", stream=True, stream_options={"include_usage": True})
    _, headers, data = serve(Optillm(None, stream=True, calls=1, prompt=10, completion=7), body)
    assert chunks_of(data)[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}


def test_an_error_answer_is_not_rewritten():
    error = {"error": {"message": "bad", "type": "invalid_request_error"}}
    status, headers, data = serve(Optillm(error, status=400, calls=0, prompt=0, completion=0), chat("moa-jerry-xl"))
    assert status == 400 and json.loads(data) == error and headers[usage.CALLS_HEADER] == "0"


@pytest.mark.parametrize("options", ["yes", [], 1, {"include_usage": "true"}, {"include_usage": 1}], ids=str)
def test_malformed_stream_options_are_refused_by_the_policy(options):
    verdict = check(make_policy(), chat("moa-jerry-xl", stream=True, stream_options=options))
    assert verdict.status == 400 and verdict.rule == "invalid-body" and "stream_options" in verdict.message


def test_usage_setting_is_checked_like_every_other():
    assert settings.request_settings({}, [], {}).usage == "upstream"
    assert settings.request_settings({"PROXY_USAGE": " Stock "}, [], {}).usage == "stock"
    with pytest.raises(settings.ConfigRefused, match=r"PROXY_USAGE='true': set upstream .* or stock"):
        settings.parse_usage("true")


# --- the transport's count ---------------------------------------------------------------------


@pytest.mark.parametrize("first", [500, 429, 503, httpx.ConnectError("refused")], ids=str)
def test_a_retried_call_counts_the_usage_of_the_attempt_that_answered_once(first):
    transport, registry = transport_for(Scripted(first, 200), retries=1)
    ctx = new_ctx()
    registry.open(ctx)
    assert call(transport, ctx).status_code == 200
    assert (ctx.prompt_tokens, ctx.completion_tokens, ctx.ok) == (10, 7, 1)


def test_concurrent_calls_of_one_request_are_all_counted():
    """moa's and bon's calls run on optillm's worker threads: the sum is taken under the lock."""
    transport, registry = transport_for(Scripted(*[200] * 8), retries=0)
    ctx = new_ctx()
    registry.open(ctx)
    threads = [threading.Thread(target=call, args=(transport, ctx)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert usage.spent(ctx) == usage.Spent(8, 80, 56)
