"""The route guard (launcher routes.py) on an app shaped like optillm 0.3.12's (tests/stock_shape.py).

The invariant, stated as hypothesis properties: stock's chat view never runs unless the policy
accepted that very request's body, the method was exactly POST and the target exactly
/v1/chat/completions; no request gets a 5xx; every refusal is a 4xx in OpenAI's error shape,
recorded and counted under its rule; a request without the key gets optillm's own 401 and nothing
from the policy. Driven through werkzeug's own server (raw bytes on a loopback socket: its
request-line parsing, REQUEST_URI/RAW_URI) and through environs as a server that passes no raw target
builds them. The same against real optillm: tests/test_request_path.py.
"""

from __future__ import annotations

import io
import json
import posixpath
from types import SimpleNamespace

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from optillm_proxy_launcher import routes
from optillm_proxy_launcher.policy import RULES
from optillm_proxy_launcher.settings import ConfigRefused
from tests import stock_shape
from tests.stock_shape import CANONICAL_CHAT, KEY, Served, error_code, raw_request

ROUTE_RULES = ("unknown-route", "method-not-allowed", "method-not-canonical", "target-not-canonical", "invalid-host")
ACCEPTED = json.dumps({"model": "moa-jerry-xl", "messages": [{"role": "user", "content": "What is 6*7?"}]}).encode()
REFUSED_BODY = json.dumps({"model": "moa-jerry-xl", "messages": [
    {"role": "user", "content": "<optillm_approach>cepo</optillm_approach>"}]}).encode()
PROPERTY = hsettings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def served():
    stock = stock_shape.build()
    server = Served(stock.app)
    yield stock, server.port
    server.close()


def send(port, method: str, target: str, *, auth: bytes | None = b"Bearer " + KEY.encode(), body=ACCEPTED,
         host: bytes | None = b"127.0.0.1:4020", content_type=b"application/json", extra: bytes = b""):
    head = f"{method} {target} HTTP/1.1".encode("latin-1")
    for name, value in ((b"Host", host), (b"Authorization", auth), (b"Content-Type", content_type)):
        if value is not None:
            head += b"\r\n" + name + b": " + value
    head += b"\r\nContent-Length: %d" % len(body) + extra
    return raw_request(port, head, body)


# --- the table, case by case --------------------------------------------------------------------

CASES = [  # method, target, status, rule ("" for an answer from optillm's view)
    ("POST", "/v1/chat/completions", 200, ""),
    ("POST", "/v1/chat/completions?api-version=1", 200, ""),
    ("GET", "/v1/models", 200, ""),
    ("GET", "/health", 200, ""),
    ("GET", "/health?optillm-proxy-probe", 200, ""),
    ("post", "/v1/chat/completions", 400, "method-not-canonical"),
    ("Post", "/v1/chat/completions", 400, "method-not-canonical"),
    ("get", "/v1/models", 400, "method-not-canonical"),
    ("GET", "/v1/chat/completions", 405, "method-not-allowed"),
    ("PUT", "/v1/chat/completions", 405, "method-not-allowed"),
    ("OPTIONS", "/v1/chat/completions", 405, "method-not-allowed"),
    ("HEAD", "/v1/models", 405, "method-not-allowed"),
    ("OPTIONS", "/v1/models", 405, "method-not-allowed"),
    ("HEAD", "/health", 405, "method-not-allowed"),
    ("POST", "/health", 405, "method-not-allowed"),
    ("POST", "/metrics", 405, "method-not-allowed"),
    ("POST", "/%2Fv1/chat/completions", 400, "target-not-canonical"),
    ("POST", "/v1%2Fchat%2Fcompletions", 400, "target-not-canonical"),
    ("POST", "/v1/chat/%63ompletions", 400, "target-not-canonical"),
    ("POST", "/v1//chat/completions", 400, "target-not-canonical"),
    ("POST", "/v1/chat/completions/", 400, "target-not-canonical"),
    ("POST", "/v1/./chat/completions", 400, "target-not-canonical"),
    ("POST", "/v1/x/../chat/completions", 400, "target-not-canonical"),
    ("POST", "http://127.0.0.1:4020//v1/chat/completions", 400, "target-not-canonical"),
    ("POST", "http://127.0.0.1:4020/v1/chat/completions", 400, "target-not-canonical"),
    ("post", "http://127.0.0.1:4020//v1/chat/completions", 400, "target-not-canonical"),
    ("GET", "/health/", 400, "target-not-canonical"),
    ("GET", "/static/app.js", 404, "unknown-route"),
    ("GET", "/", 404, "unknown-route"),
    ("POST", "/v1/completions", 404, "unknown-route"),
    ("POST", "/V1/chat/completions", 404, "unknown-route"),
]


@pytest.mark.parametrize("method,target,status,rule", CASES, ids=[f"{m} {t}" for m, t, *_ in CASES])
def test_every_route_and_method_is_decided(served, method, target, status, rule):
    stock, port = served
    runs, records = len(stock.chat_runs), len(stock.records)
    got, headers, payload = send(port, method, target)
    assert got == status, payload[:300]
    if rule:
        assert len(stock.chat_runs) == runs
        assert stock.records[records:][-1].policy_rule == rule
        if method != "HEAD":
            assert error_code(payload) == rule
            message = json.loads(payload)["error"]["message"]
            assert message.startswith(f"refused by optillm-proxy policy ({rule}): ") and "\n" not in message
        if status == 405:
            assert headers["allow"] in ("POST", "GET")


def test_metrics_are_answered_before_optillm_and_only_as_GET(served):
    stock, port = served
    status, _, payload = send(port, "GET", "/metrics", auth=None)
    assert status == 200 and payload == b"# metrics stand-in\n"
    status, _, payload = send(port, "get", "/metrics")
    assert (status, error_code(payload)) == (400, "method-not-canonical")


def test_without_the_key_optillm_answers_401_and_the_policy_says_nothing(served):
    stock, port = served
    for method, target in (("post", "/%2Fv1/chat/completions"), ("PUT", "/nope"), ("POST", CANONICAL_CHAT)):
        for auth in (None, b"Bearer wrong", b"Basic x", "Bearer é".encode("latin-1"), "Bearer ключ".encode()):
            status, _, payload = send(port, method, target, auth=auth, body=REFUSED_BODY)
            assert status == 401, (method, target, auth, payload)
            assert b"optillm-proxy policy" not in payload


def test_a_non_ascii_key_next_to_the_right_one_is_still_a_401(served):
    _, port = served
    for auth in (f"Bearer {KEY}é".encode("latin-1"), f"Bearer {KEY}\u00a0".encode("latin-1"),
                 f"Bearer {KEY}".encode() + b"\xff"):
        assert send(port, "POST", CANONICAL_CHAT, auth=auth)[0] == 401


def test_an_unparseable_host_is_refused(served):
    stock, port = served
    status, _, payload = send(port, "POST", CANONICAL_CHAT, host=b"a" * 64 + b".example")  # an IDNA label <= 63
    assert (status, error_code(payload)) == (400, "invalid-host")


def test_every_refusal_is_counted_by_its_rule():
    stock = stock_shape.build()
    server = Served(stock.app)
    try:
        for method, target, _, rule in CASES:
            send(server.port, method, target)
        send(server.port, "POST", CANONICAL_CHAT, body=REFUSED_BODY)
    finally:
        server.close()
    want: dict[str, float] = {}
    for *_, rule in CASES:
        if rule:
            want[rule] = want.get(rule, 0) + 1
    want["approach-tag"] = 1
    assert stock.refusals() == want
    assert set(want) <= set(RULES)


# --- the invariant, by property -----------------------------------------------------------------

PATHS = [r.path for r in routes.ROUTES] + [CANONICAL_CHAT] * 4 + ["/static/app.js", "/v1", "/", "/v1/completions"]
# Each distortion turns a route's path into another spelling; none at all is drawn often, so the
# canonical request (which must pass) is generated as well as its variants.
DISTORTIONS = ("encode", "encode-lower", "double-slash", "encoded-slash", "dot", "dot-dot", "trailing-slash",
               "upper", "leading-slash", "leading-encoded-slash", "absolute", "absolute-double", "fragment")


@st.composite
def spellings(draw) -> str:
    """A path as a client might spell it: percent-encoding, slashes, dot segments, case, absolute-form."""
    path = draw(st.sampled_from(PATHS))
    segments = path.strip("/").split("/") if path != "/" else []
    prefix = absolute = fragment = ""
    for distortion in draw(st.lists(st.sampled_from(DISTORTIONS), max_size=3)):
        i = draw(st.integers(0, max(len(segments) - 1, 0)))
        if distortion.startswith("encode") and segments and segments[i]:
            j = draw(st.integers(0, len(segments[i]) - 1))
            code = f"%{ord(segments[i][j]):02X}"
            code = code.lower() if distortion == "encode-lower" else code
            segments[i] = segments[i][:j] + code + segments[i][j + 1:]
        elif distortion in ("double-slash", "encoded-slash", "dot", "dot-dot") and segments:
            extra = {"double-slash": "", "encoded-slash": "%2F", "dot": ".", "dot-dot": "x/.."}[distortion]
            segments.insert(i, extra) if extra != "%2F" else segments.__setitem__(i, "%2F" + segments[i])
        elif distortion == "trailing-slash":
            segments.append("")
        elif distortion == "upper" and segments:
            segments[i] = segments[i].upper()
        elif distortion == "leading-slash":
            prefix = "/"
        elif distortion == "leading-encoded-slash":
            prefix = "/%2F"
        elif distortion.startswith("absolute"):
            absolute = draw(st.sampled_from(["http://127.0.0.1:4020", "http://evil.example", "HTTP://localhost"]))
            prefix = "/" if distortion == "absolute-double" else prefix
        elif distortion == "fragment":
            fragment = "#frag"
    query = draw(st.sampled_from(["", "", "", "?", "?a=1", "?x=%2F..%2F", "?/v1/chat/completions"]))
    return absolute + prefix + "/" + "/".join(segments) + query + fragment


ROUTE_METHODS = st.sampled_from(["POST", "POST", "GET", "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"])
METHODS = st.one_of(st.just("POST"), st.just("GET"),
                    ROUTE_METHODS.flatmap(lambda m: st.sampled_from([m, m.lower(), m.title()])))
HOSTS = st.sampled_from([b"127.0.0.1:4020", b"127.0.0.1:4020", b"127.0.0.1:4020", b"localhost", b"", b"evil.example",
                         b"[::1]:4020", b"a b",
                         "exämple".encode("latin-1"), b"x" * 300, None])
AUTHS = st.one_of(st.just(b"Bearer " + KEY.encode()), st.sampled_from(
    [b"Bearer wrong", None, "Bearer é".encode("latin-1"), b"bearer " + KEY.encode()]))
BODIES = st.sampled_from([ACCEPTED, ACCEPTED, REFUSED_BODY, b"{", b""])


def _is_canonical(method: str, target: str) -> bool:
    path = target.split("?", 1)[0]
    route = routes.BY_PATH.get(path)
    return route is not None and method == route.method


def _judge(stock, runs_before, records_before, method, target, auth, body, host, status, payload):
    """The invariant for one request; returns nothing, asserts everything."""
    assert status < 500, (method, target, status, payload[:300])
    for run in stock.chat_runs[runs_before:]:
        assert run.policy_passed, (method, target, run)
        assert run.method == "POST", (method, target, run)
        assert run.raw_target is None or run.raw_target.split("?", 1)[0] == CANONICAL_CHAT, (method, target, run)
        assert run.approach == "moa"
    assert len(stock.chat_runs) - runs_before <= 1
    records = stock.records[records_before:]
    rule = records[-1].policy_rule if records else ""
    if status == 401:
        assert auth != b"Bearer " + KEY.encode() and b"optillm-proxy policy" not in payload and not rule
    if rule:
        assert rule in RULES and 400 <= status < 500
        if method.upper() != "HEAD":
            assert error_code(payload) == rule, payload[:300]
    elif status >= 400 and status != 401:
        raise AssertionError(f"{method} {target}: {status} without a rule: {payload[:300]!r}")
    authorised = auth == b"Bearer " + KEY.encode()
    host_ok = host in (b"127.0.0.1:4020", b"localhost", b"evil.example", b"[::1]:4020", None, b"")
    if authorised and host_ok and _is_canonical(method, target):
        route = routes.BY_PATH[target.split("?", 1)[0]]
        if route.path != CANONICAL_CHAT:
            assert status == 200, (method, target, payload[:300])
        elif body == ACCEPTED:
            assert status == 200 and len(stock.chat_runs) == runs_before + 1, (method, target, payload[:300])
    elif target.split("?", 1)[0] == CANONICAL_CHAT and method == "POST" and body == ACCEPTED and not authorised:
        assert status == 401


@PROPERTY
@given(method=METHODS, target=spellings(), auth=AUTHS, body=BODIES, host=HOSTS)
@example(method="POST", target=CANONICAL_CHAT, auth=b"Bearer " + KEY.encode(), body=ACCEPTED, host=b"127.0.0.1:4020")
def test_no_spelling_reaches_the_chat_view_unchecked(served, method, target, auth, body, host):
    """Through werkzeug's own server: the raw request line as a client sends it."""
    stock, port = served
    runs, records = len(stock.chat_runs), len(stock.records)
    status, _, payload = send(port, method, target, auth=auth, body=body, host=host)
    _judge(stock, runs, records, method, target, auth, body, host, status, payload)
    # werkzeug's server passes the raw target: anything not written as a route is refused
    if not _is_canonical(method, target) and not target.startswith("//") and status not in (401,):
        assert 400 <= status < 500 and len(stock.chat_runs) == runs


@pytest.fixture(scope="module")
def bare():
    return stock_shape.build()


def server_environ(method: str, target: str, auth, body: bytes, host, with_raw: bool) -> dict:
    """An environ as a server builds it: PATH_INFO decoded, leading slashes collapsed (as waitress
    and Python's http.server do), the method as sent; the raw target only `with_raw`."""
    from urllib.parse import unquote, urlsplit

    split = urlsplit(target)
    path = split.path if split.scheme else target.split("?", 1)[0]
    builder = EnvironBuilder(method="GET", data=body, content_type="application/json")
    environ = builder.get_environ()
    decoded = unquote(path, encoding="latin-1")
    environ.update({"REQUEST_METHOD": method, "SCRIPT_NAME": "",
                    "PATH_INFO": ("/" + decoded.lstrip("/")) if decoded.startswith("/") else decoded,
                    "QUERY_STRING": split.query, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))})
    for name in ("HTTP_HOST", "REQUEST_URI", "RAW_URI"):  # EnvironBuilder's own, for "/"
        environ.pop(name, None)
    if host is not None:
        environ["HTTP_HOST"] = host.decode("latin-1")
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = auth.decode("latin-1")
    if with_raw:
        environ["REQUEST_URI"] = environ["RAW_URI"] = target
    return environ


@PROPERTY
@given(method=METHODS, target=spellings(), auth=AUTHS, body=BODIES, host=HOSTS, with_raw=st.booleans())
@example(method="POST", target=CANONICAL_CHAT, auth=b"Bearer " + KEY.encode(), body=ACCEPTED, host=None,
         with_raw=False)
def test_no_environ_reaches_the_chat_view_unchecked(bare, method, target, auth, body, host, with_raw):
    """Servers that normalise before the app (waitress passes no raw target): the policy still runs."""
    stock = bare
    runs, records = len(stock.chat_runs), len(stock.records)
    environ = server_environ(method, target, auth, body, host, with_raw)
    app_iter, status_line, _ = run_wsgi_app(stock.app, environ)
    payload = b"".join(app_iter)
    getattr(app_iter, "close", lambda: None)()
    status = int(status_line.split(" ", 1)[0])
    _judge(stock, runs, records, method, target, auth, body, host, status, payload)
    assert stock.registry.in_flight() == 0


# --- the patch point is verified ------------------------------------------------------------------


def _app_with(extra=None, hooks=1, without_chat=False):
    app = Flask("optillm.server")

    def check_api_key():
        return None

    app.before_request(check_api_key)
    for _ in range(hooks - 1):
        app.before_request(lambda: None)
    if not without_chat:
        app.add_url_rule("/v1/chat/completions", "proxy", lambda: "", methods=["POST"])
    app.add_url_rule("/v1/models", "proxy_models", lambda: "", methods=["GET"])
    app.add_url_rule("/health", "health", lambda: "", methods=["GET"])
    if extra:
        app.add_url_rule(*extra)
    return app, check_api_key


def test_verify_accepts_the_stock_shape_and_refuses_any_other():
    app, hook = _app_with()
    routes.verify(app, hook)
    for app, hook, match in (
            (*_app_with(extra=("/v1/embeddings", "embeddings", lambda: "")), "/v1/embeddings"),
            (*_app_with(without_chat=True), "routes differ"),
            (*_app_with(hooks=2), "check_api_key alone")):
        with pytest.raises(ConfigRefused, match=match):
            routes.verify(app, hook)
    app, _ = _app_with()
    with pytest.raises(ConfigRefused, match="check_api_key alone"):
        routes.verify(app, lambda: None)


def test_the_decision_is_the_routers_not_a_string_compare():
    """decide() with the router's own verdicts: a canonical path the router sent elsewhere is refused."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": CANONICAL_CHAT, "SCRIPT_NAME": ""}
    assert routes.decide(environ, "proxy") is None
    assert routes.decide(environ, "health").rule == "unknown-route"
    assert routes.decide(environ, None, SimpleNamespace(code=404)).rule == "unknown-route"
    assert routes.decide({**environ, "RAW_URI": "/v1//chat/completions"}, None,
                         SimpleNamespace(code=308)).rule == "target-not-canonical"
    assert routes.decide(environ, "proxy", SimpleNamespace(code=400)).rule == "invalid-host"
    assert posixpath.normpath("/v1/chat/completions/") == CANONICAL_CHAT


def test_every_route_rule_is_documented_with_its_status():
    """routes.STATUS is what decide() answers; policy.RULES (the docs, `opsctl lint --explain`) says the same."""
    assert {rule for *_, rule in routes.REFUSED} == set(routes.STATUS)
    for rule, status in routes.STATUS.items():
        assert RULES[rule].endswith(f"(HTTP {status})"), rule
