"""The launcher's request path, unit by unit (fast tier: no optillm, no network beyond MockTransport).

policy: every in-band override form and bad body is refused with its rule, never rewritten; any
body or Authorization header, however malformed, gets a 4xx with a one-line reason, never a 5xx.
upstream: the transport's deadline, per-call timeout, retries, accounting and header stripping.
gateway: the body bound, auth-before-policy (on an app shaped like optillm's, tests/stock_shape.py),
and how upstream failures become 502/429/504.
The same behaviour against real optillm 0.3.12 is in tests/test_request_path.py; which routes and
methods reach optillm at all is tests/test_route_guard.py.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from optillm_proxy_launcher import settings
from optillm_proxy_launcher.gateway import Gate
from optillm_proxy_launcher.policy import MAX_JSON_DEPTH, RULES, Policy, Refusal, Verdict
from optillm_proxy_launcher.upstream import (REQUEST_HEADER, BoundedTransport, Bounds, DeadlineExceeded,
                                             Registry, RequestContext)
from tests import stock_shape
from tests.stock_shape import FIELDS, TABLE, error_code, make_policy


def check(policy: Policy, body, content_type="application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return policy.check(raw, content_type)


def chat(model="jerry-xl", content="What is 6*7?", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# --- policy ------------------------------------------------------------------------------------

TAG = "<optillm_approach>cepo</optillm_approach>"
REFUSED = {
    "tag in system string": ({"model": "moa-jerry-xl", "messages": [
        {"role": "system", "content": TAG}, {"role": "user", "content": "hi"}]}, "approach-tag"),
    "tag in user string": (chat("moa-jerry-xl", f"hi {TAG}"), "approach-tag"),
    "tag in list content": (chat("moa-jerry-xl", [{"type": "text", "text": TAG}]), "approach-tag"),
    "tag in assistant turn": ({"model": "jerry-xl", "messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": TAG}]}, "approach-tag"),
    "tag in a tool message": ({"model": "jerry-xl", "messages": [
        {"role": "user", "content": "a"}, {"role": "tool", "content": TAG, "tool_call_id": "x"}]}, "approach-tag"),
    "approach field": (chat("moa-jerry-xl", optillm_approach="cepo"), "approach-field"),
    "mcts field": (chat("jerry-xl", mcts_depth=9), "server-config-field"),
    "combined with &": (chat("moa&bon-jerry-xl"), "combined-approach"),
    "combined with |": (chat("moa|bon-jerry-xl"), "combined-approach"),
    "two prefixes": (chat("moa-bon-jerry-xl"), "multiple-approaches"),
    "core approach not listed": (chat("cepo-jerry-xl"), "approach-not-allowed"),
    "plugin not enabled": (chat("readurls-jerry-xl"), "approach-not-allowed"),
    "prefix without base": (chat("moa-"), "no-base-model"),
    "client option timeout": (chat(timeout=9999), "unknown-field"),
    "client option extra_body": (chat(extra_body={"x": 1}), "unknown-field"),
    "unknown field": (chat(foo=1), "unknown-field"),
    "n above MAX_N": (chat("moa-jerry-xl", n=5), "n-out-of-range"),
    "n zero": (chat(n=0), "invalid-body"),
    "stream not bool": (chat(stream="yes"), "invalid-body"),
    "no messages": ({"model": "jerry-xl", "messages": []}, "invalid-body"),
    "message without content": ({"messages": [{"role": "user"}]}, "invalid-body"),
    "null user content": ({"messages": [{"role": "user", "content": None}]}, "invalid-body"),
    "text part without text": (chat(content=[{"type": "text"}]), "invalid-body"),
    "model not a string": (chat(model=5), "invalid-body"),
    "body not an object": ([1, 2], "invalid-body"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_its_rule(case):
    body, rule = REFUSED[case]
    verdict = check(make_policy(), body)
    assert isinstance(verdict, Refusal), verdict
    assert (verdict.status, verdict.rule) == (400, rule)
    error = json.loads(verdict.body())["error"]
    assert error["code"] == rule and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"refused by optillm-proxy policy ({rule}): ")
    assert rule in RULES


def test_malformed_json_and_media_type():
    policy = make_policy()
    assert check(policy, b'{"model":').rule == "malformed-json"
    assert check(policy, b"\xff\xfe").rule == "malformed-json"
    refusal = check(policy, chat(), content_type="text/plain")
    assert (refusal.status, refusal.rule) == (415, "unsupported-media-type")
    assert isinstance(check(policy, chat(), content_type="application/json; charset=utf-8"), Verdict)


@pytest.mark.parametrize("model,approach", [
    ("jerry-xl", "none"), ("none-jerry-xl", "none"), ("moa-jerry-xl", "moa"), ("bon-jerry-xl", "bon"),
    ("plansearch-jerry-xl", "plansearch"), ("self_consistency-jerry-xl", "self_consistency"),
    ("gpt-4o-mini", "none"),  # dashes in a base model are not prefixes
])
def test_routed_prefixes_and_base_models_pass(model, approach):
    verdict = check(make_policy(), chat(model))
    assert isinstance(verdict, Verdict) and verdict.approach == approach


def test_no_model_means_optillms_default_base_model():
    assert check(make_policy(), {"messages": [{"role": "user", "content": "x"}]}).approach == "none"


def test_allow_list_is_the_operators():
    only_moa = make_policy("moa")
    assert check(only_moa, chat("moa-jerry-xl")).approach == "moa"
    assert check(only_moa, chat("bon-jerry-xl")).rule == "approach-not-allowed"
    combined = make_policy("moa,moa&bon")
    assert check(combined, chat("moa&bon-jerry-xl")).approach == "moa&bon"
    assert check(combined, chat("moa|bon-jerry-xl")).rule == "combined-approach"
    base_only = make_policy("none")
    assert check(base_only, chat("jerry-xl")).approach == "none"
    refusal = check(base_only, chat("moa-jerry-xl"))
    assert refusal.rule == "approach-not-allowed" and "allowed: none (base model only)" in refusal.message
    with_plugin = make_policy(plugins=["majority_voting"])
    assert check(with_plugin, chat("majority_voting-jerry-xl")).approach == "majority_voting"


def test_assistant_tool_calls_with_null_content_pass():
    body = {"model": "jerry-xl", "messages": [{"role": "user", "content": "x"},
                                             {"role": "assistant", "content": None, "tool_calls": []}]}
    assert isinstance(check(make_policy(), body), Verdict)


def test_a_null_model_is_refused_not_taken_for_no_model():
    """0.3.12 takes `"model": null` as the model None and fails building the approach from it (a 500)."""
    refusal = check(make_policy(), {"model": None, "messages": [{"role": "user", "content": "x"}]})
    assert (refusal.status, refusal.rule) == (400, "invalid-body") and "leave the field out" in refusal.message


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                 json.dumps({"model": "jerry-xl", "messages": [{"role": "user", "content": "x"}],
                                             "metadata": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)}
                                            ).encode()], ids=["100k arrays", "100k objects", "just too deep"])
def test_deep_nesting_is_refused_without_a_recursion_error(raw):
    assert check(make_policy(), raw).rule == "nesting-too-deep"


def test_nesting_up_to_the_bound_passes():
    deep = json.loads("[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2))
    body = {"model": "jerry-xl", "messages": [{"role": "user", "content": "x"}], "metadata": {"k": deep}}
    assert isinstance(check(make_policy(), body), Verdict)


@pytest.mark.parametrize("number", ["9223372036854775808", "-9223372036854775809", "1" + "0" * 5000, "1e400",
                                    "-1e400", "NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["n", "max_tokens", "temperature", "seed", "metadata"])
def test_numbers_out_of_range_are_refused(field, number):
    raw = f'{{"model": "jerry-xl", "messages": [{{"role": "user", "content": "x"}}], "{field}": {number}}}'.encode()
    refusal = check(make_policy(), raw)
    assert isinstance(refusal, Refusal) and refusal.rule in ("invalid-body", "malformed-json"), refusal
    assert "\n" not in refusal.message and len(refusal.message) < 300


def test_the_largest_int64_and_a_valid_surrogate_pair_pass():
    raw = (b'{"model": "jerry-xl", "seed": 9223372036854775807, '
           b'"messages": [{"role": "user", "content": "\\ud83d\\ude00 \\u00e9"}]}')
    assert isinstance(check(make_policy(), raw), Verdict)


@pytest.mark.parametrize("text", ["\\ud800", "x\\udfff", "\\ude00\\ud83d"])
def test_an_unpaired_surrogate_is_refused(text):
    raw = f'{{"model": "jerry-xl", "messages": [{{"role": "user", "content": "{text}"}}]}}'.encode()
    assert check(make_policy(), raw).rule == "invalid-body"
    raw = f'{{"model": "jerry-xl", "messages": [{{"role": "user", "content": "x"}}], "{text}": 1}}'.encode()
    assert isinstance(check(make_policy(), raw), Refusal)


def test_a_missing_content_type_is_415():
    assert check(make_policy(), chat(), content_type=None).rule == "unsupported-media-type"


# Every JSON value, the awkward ones included: nulls, huge and non-finite numbers, lone surrogates.
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
           | st.sampled_from(["\ud800", "\udfff x", "<optillm_approach>cepo</optillm_approach>", "moa-jerry-xl"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=10)
def nested(most: int):
    """JSON text nested 1..most deep, in arrays or objects."""
    return st.tuples(st.integers(1, most), st.sampled_from(["[]", "{}"])).map(
        lambda d: ('{"a":' * d[0] + "1" + "}" * d[0]) if d[1] == "{}" else "[" * d[0] + "]" * d[0])


NESTED = nested(5000)
GOOD = {"model": "moa-jerry-xl", "messages": [{"role": "user", "content": "What is 6*7?"}], "max_tokens": 50}


def _field_variants():
    """A good body with one field set to anything (every field openai takes, and ours)."""
    names = sorted(FIELDS | {"optillm_approach", "mcts_depth", "timeout", "extra_body"})
    return st.tuples(st.sampled_from(names), JSON | nested(200).map(json.loads)).map(lambda kv: {**GOOD, kv[0]: kv[1]})


def _encode(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN/Infinity as Python writes them


RAW = st.one_of(
    st.binary(max_size=40),
    JSON.map(_encode),
    _field_variants().map(_encode),
    NESTED.map(str.encode),
    st.tuples(_field_variants().map(_encode), st.integers(0, 200), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]),  # bytes spliced in: non-UTF-8, broken syntax
)


@hsettings(max_examples=300, deadline=None)
@given(RAW)
def test_any_body_gets_a_verdict_never_an_exception(raw):
    verdict = make_policy().check(raw, "application/json")
    assert isinstance(verdict, (Verdict, Refusal))
    if isinstance(verdict, Refusal):
        assert verdict.rule in RULES and 400 <= verdict.status < 500
        assert "\n" not in verdict.message and len(verdict.message) < 400
    else:  # what optillm will parse: JSON its encoder and openai's can write back
        json.dumps(verdict.body, allow_nan=False).encode("utf-8")


# --- settings ----------------------------------------------------------------------------------


def test_request_settings_defaults_and_bounds():
    s = settings.request_settings({}, [], TABLE)
    assert (s.upstream_timeout, s.upstream_retries, s.deadline, s.max_request_bytes, s.max_n) == (
        120, 1, 300, 4 * 1024 * 1024, 4)
    assert s.approaches == frozenset(settings.ROUTED_STRATEGIES)
    assert settings.request_settings({}, ["genselect"], TABLE).approaches == frozenset(
        {*settings.ROUTED_STRATEGIES, "genselect"})
    assert settings.request_settings({"UPSTREAM_RETRIES": " "}, [], TABLE).upstream_retries == 1
    for bad in ({"UPSTREAM_TIMEOUT_SECONDS": "0"}, {"MAX_REQUEST_BYTES": "1.5"}, {"MAX_N": "-1"},
                {"PROXY_APPROACHES": "moa&bon|rto"}, {"PROXY_APPROACHES": "moa&moa"}, {"PROXY_APPROACHES": "none,moa"}):
        with pytest.raises(settings.ConfigRefused):
            settings.request_settings(bad, [], TABLE)


# --- upstream transport ------------------------------------------------------------------------


class Scripted(httpx.BaseTransport):
    """An upstream that answers from a script: a status, an exception, or a delay then 200. An error's
    message is `message` when given (e.g. one that quotes the key it was sent)."""

    def __init__(self, *steps, message: str | None = None):
        self.steps = list(steps)
        self.message = message
        self.seen: list[httpx.Request] = []

    def handle_request(self, request):
        self.seen.append(request)
        step = self.steps.pop(0) if self.steps else 200
        if isinstance(step, Exception):
            raise step
        body = ({"usage": {"prompt_tokens": 10, "completion_tokens": 7}} if step == 200
                else {"error": {"message": self.message or f"injected {step}"}})
        return httpx.Response(step, json=body, headers={"retry-after": "0"} if step == 429 else {})


def transport_for(inner, retries=1, timeout=30.0):
    registry = Registry()
    return BoundedTransport(inner, Bounds(timeout, retries), registry, sleep=lambda s: None), registry


def call(transport, ctx=None):
    headers = {REQUEST_HEADER: ctx.id} if ctx else {}
    with httpx.Client(transport=transport) as client:
        return client.post("http://upstream.test/v1/chat/completions", json={}, headers=headers)


def new_ctx(deadline=60.0) -> RequestContext:
    ctx = RequestContext(deadline=time.monotonic() + deadline, deadline_seconds=deadline)
    return ctx


def test_call_is_counted_with_its_usage_and_the_request_header_never_leaves():
    inner = Scripted(200, 200)
    transport, registry = transport_for(inner)
    ctx = new_ctx()
    registry.open(ctx)
    assert call(transport, ctx).status_code == 200
    assert call(transport, ctx).status_code == 200
    assert (ctx.calls, ctx.ok, ctx.prompt_tokens, ctx.completion_tokens, ctx.failures) == (2, 2, 20, 14, [])
    assert all(REQUEST_HEADER not in r.headers for r in inner.seen)
    timeouts = inner.seen[0].extensions["timeout"]
    assert timeouts["read"] <= 30 and timeouts["connect"] <= 5


@pytest.mark.parametrize("first", [500, 429, 503, httpx.ConnectError("refused")], ids=str)
def test_one_retry_then_success(first):
    inner = Scripted(first, 200)
    transport, registry = transport_for(inner, retries=1)
    ctx = new_ctx()
    registry.open(ctx)
    assert call(transport, ctx).status_code == 200
    assert (ctx.retries, ctx.ok, len(ctx.failures)) == (1, 1, 1)


def test_retries_are_bounded_and_not_for_client_errors():
    inner = Scripted(500, 500, 500)
    transport, registry = transport_for(inner, retries=1)
    ctx = new_ctx()
    registry.open(ctx)
    assert call(transport, ctx).status_code == 500
    assert len(inner.seen) == 2 and ctx.last_failure_status == 500
    assert ctx.failures[-1] == "HTTP 500: injected 500"
    inner = Scripted(400)
    transport, registry = transport_for(inner, retries=3)
    assert call(transport).status_code == 400 and len(inner.seen) == 1


def test_no_call_after_the_deadline_and_no_call_for_an_ended_request():
    inner = Scripted()
    transport, registry = transport_for(inner)
    late = new_ctx(deadline=-1)
    registry.open(late)
    with pytest.raises(DeadlineExceeded):
        call(transport, late)
    assert late.deadline_hit and inner.seen == []
    registry.close(late)
    with pytest.raises(DeadlineExceeded, match="already ended"):
        call(transport, late)
    assert inner.seen == []


def test_a_call_never_waits_past_the_time_left():
    inner = Scripted()
    transport, registry = transport_for(inner, timeout=120)
    ctx = new_ctx(deadline=2.0)
    registry.open(ctx)
    call(transport, ctx)
    assert inner.seen[0].extensions["timeout"]["read"] <= 2.0


def test_a_timeout_is_recorded_and_not_retried():
    inner = Scripted(httpx.ReadTimeout("slow"))
    transport, registry = transport_for(inner, retries=3)
    ctx = new_ctx()
    registry.open(ctx)
    with pytest.raises(httpx.ReadTimeout):
        call(transport, ctx)
    assert ctx.timed_out and not ctx.deadline_hit and len(inner.seen) == 1


# --- gateway -----------------------------------------------------------------------------------

KEY = stock_shape.KEY


class FakeApp:
    """Stands in for optillm's Flask app: answers `status` after running `effect(ctx)`."""

    def __init__(self, status=200, effect=None):
        self.status, self.effect, self.calls = status, effect, 0

    def __call__(self, environ, start_response):
        self.calls += 1
        self.body = environ["wsgi.input"].read()
        if self.effect:
            self.effect(environ["optillm_proxy.request"])
        start_response(f"{self.status} X", [("Content-Type", "application/json")])
        return [b'{"ok": true}']


def serve(app, body: bytes | None = None, *, path="/v1/chat/completions", **env):
    """The gate alone around `app` (what optillm answered, and what happened upstream)."""
    registry = Registry()
    gate = Gate(app, make_policy(**env), registry, "http://127.0.0.1:4000/v1")
    raw = body if body is not None else json.dumps(chat()).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
               "HTTP_AUTHORIZATION": f"Bearer {KEY}"}
    seen = {}
    out = gate(environ, lambda status, headers, exc_info=None: seen.update(status=status, headers=headers))
    data = b"".join(out)
    getattr(out, "close", lambda: None)()
    assert registry.in_flight() == 0, "every request context is closed"
    return int(seen["status"].split()[0]), json.loads(data)


def post(stock, body: bytes, *, auth: str | None = f"Bearer {KEY}", content_type: str | None = "application/json",
         length: str | None = None, chunked=False):
    """A chat completion through the launcher's layers on an app shaped like optillm's: (status, payload)."""
    environ = EnvironBuilder(method="POST", path="/v1/chat/completions").get_environ()
    environ.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": length or str(len(body))})
    for name, value in (("CONTENT_TYPE", content_type), ("HTTP_AUTHORIZATION", auth)):
        environ.pop(name, None)
        if value is not None:
            environ[name] = value
    if chunked:  # as werkzeug's server passes a chunked body: no length, the stream ends itself
        environ.pop("CONTENT_LENGTH")
        environ["wsgi.input_terminated"] = True
    app_iter, status, _ = run_wsgi_app(stock.app, environ)
    payload = b"".join(app_iter)
    getattr(app_iter, "close", lambda: None)()
    assert stock.registry.in_flight() == 0, "every request context is closed"
    return int(status.split(" ", 1)[0]), payload


def test_refusal_never_reaches_optillm():
    stock = stock_shape.build()
    status, payload = post(stock, json.dumps(chat("cepo-jerry-xl")).encode())
    assert (status, error_code(payload)) == (400, "approach-not-allowed") and stock.chat_runs == []
    assert [(r.policy_rule, r.error_code, r.approach) for r in stock.records] == [
        ("approach-not-allowed", "approach-not-allowed", "-")]


def test_unauthenticated_request_goes_to_optillms_own_key_check_untouched():
    stock = stock_shape.build()
    status, payload = post(stock, json.dumps(chat("cepo-jerry-xl")).encode(), auth="Bearer wrong")
    assert status == 401 and json.loads(payload) == {"error": "Invalid API key"} and stock.chat_runs == []
    assert stock.policy_calls() == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_and_read_off_the_wire(chunked):
    for size in (1025, 5000):
        stock = stock_shape.build(MAX_REQUEST_BYTES="1024")
        status, payload = post(stock, b"x" * size, chunked=chunked)
        assert (status, error_code(payload)) == (413, "body-too-large") and stock.chat_runs == []
    at_the_bound = json.dumps(chat(content="x" * 1024)).encode()
    at_the_bound = at_the_bound.replace(b"x" * (len(at_the_bound) - 1024), b"", 1)
    assert len(at_the_bound) == 1024
    assert post(stock, at_the_bound, chunked=chunked)[0] == 200


def test_accepted_body_reaches_optillm_unchanged():
    stock = stock_shape.build()
    raw = json.dumps(chat("moa-jerry-xl")).encode()
    assert post(stock, raw)[0] == 200
    [run] = stock.chat_runs
    assert run.policy_passed and run.approach == "moa"


def test_a_content_length_that_is_no_number_is_400():
    stock = stock_shape.build()
    status, payload = post(stock, json.dumps(chat()).encode(), length="12abc")
    assert (status, error_code(payload)) == (400, "invalid-body")


AUTHORIZATIONS = st.one_of(st.just(f"Bearer {KEY}"), st.text(max_size=30).map(lambda s: "Bearer " + s),
                           st.binary(max_size=30).map(lambda b: (b"Bearer " + b).decode("latin-1")),
                           st.just(f"Bearer {KEY}\u00e9"), st.none())
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/json\u00e9", None, "multipart/form-data; boundary=x"])


@pytest.fixture(scope="module")
def fuzzed_stock():
    return stock_shape.build()


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=RAW, auth=AUTHORIZATIONS, content_type=CONTENT_TYPES)
def test_no_body_or_header_gets_a_5xx(fuzzed_stock, raw, auth, content_type):
    """Through the gate, the guards and a chat view that parses the body as 0.3.12's does."""
    stock = fuzzed_stock
    runs = len(stock.chat_runs)
    status, payload = post(stock, raw, auth=auth, content_type=content_type)
    assert status < 500, (status, payload[:300])
    if auth != f"Bearer {KEY}":
        assert status == 401 and b"optillm-proxy policy" not in payload
    elif status != 200:
        assert 400 <= status < 500 and error_code(payload) in RULES, payload[:300]
        message = json.loads(payload)["error"]["message"]
        assert "\n" not in message and "Traceback" not in message
    else:
        assert len(stock.chat_runs) == runs + 1 and stock.chat_runs[-1].policy_passed


def failing(*reasons, ok=0, status=None, timed_out=False, deadline=False):
    def effect(ctx):
        ctx.failures.extend(reasons)
        ctx.ok = ok
        ctx.last_failure_status = status
        ctx.timed_out = timed_out
        ctx.deadline_hit = deadline
    return effect


@pytest.mark.parametrize("optillm_status,effect,want,code", [
    (500, failing("HTTP 500: boom", status=500), 502, "upstream_error"),
    (200, failing("HTTP 500", "HTTP 500", status=500), 502, "upstream_error"),  # moa builds an answer from nothing
    (500, failing("HTTP 429", status=429), 429, "upstream_rate_limited"),
    (500, failing("HTTP 401", status=401), 502, "upstream_key_refused"),
    (500, failing("HTTP 400: bad", status=400), 400, "upstream_rejected"),
    (500, failing("ConnectError: refused"), 502, "upstream_error"),
    (500, failing("timed out after 2 s", timed_out=True), 504, "upstream_timeout"),
    (500, failing("timed out", timed_out=True, deadline=True), 504, "deadline_exceeded"),
    (200, failing(deadline=True, ok=2), 504, "deadline_exceeded"),
], ids=lambda v: str(v) if isinstance(v, (int, str)) else "")
def test_upstream_failures_are_named(optillm_status, effect, want, code):
    status, body = serve(FakeApp(optillm_status, effect))
    assert (status, body["error"]["code"]) == (want, code)


def test_partial_failure_with_an_answer_is_kept():
    status, body = serve(FakeApp(200, failing("HTTP 500", ok=2, status=500)))
    assert status == 200 and body == {"ok": True}


def test_env_file_template_shows_the_launchers_defaults_and_ranges():
    """etc/optillm-proxy/env.example documents each bound; settings.BOUNDS is the source."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "etc" / "optillm-proxy" / "env.example").read_text()
    lines = text.splitlines()
    for bound in settings.BOUNDS:
        default = f"#{bound.name}={int(bound.default) if float(bound.default).is_integer() else bound.default}"
        assert default in lines, bound.name
        at = lines.index(default)
        assert bound.range in "\n".join(lines[at - 3:at]), bound.name
    assert "#PROXY_APPROACHES=" + ",".join(settings.ROUTED_STRATEGIES) in text
