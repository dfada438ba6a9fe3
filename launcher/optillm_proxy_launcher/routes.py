"""Which requests reach optillm 0.3.12's views: every route and method decided, the policy in the view.

werkzeug routes on a normalised request (it upper-cases the method, percent-decodes the path and
drops repeated leading slashes; the development server also takes the path out of an absolute-form
target), so a check that compares the raw method or path as strings sees another request than the
one the router dispatches. Two guards sit where the router's decision is already made:

- the chat view itself (`app.view_functions["proxy"]`) is replaced by one that reads the body
  (bounded) and runs the request policy, then calls stock's view only on an accepted body: whatever
  the spelling, a request the router sends to stock's chat view passes the policy first;
- a `before_request` hook, after optillm's own `check_api_key` (an unauthenticated request gets
  optillm's 401 and learns nothing from us), answers every request that is not exactly one of
  ROUTES: unknown paths, other methods (HEAD and OPTIONS, which Flask adds, included), a method not
  written as registered, a request target that is not the route's path as written.

The target is judged from the raw request target when the server passes one (RAW_URI, REQUEST_URI:
werkzeug's server and gunicorn do), else from PATH_INFO, which the server has then already decoded
and normalised; the policy in the chat view holds either way.

Refusals are JSON errors in OpenAI's shape (policy.Refusal) and name their rule in the environ, so
the gate records and counts them like any policy refusal. The tables and the decision are stdlib
only (tools/gen_docs.py renders them); Flask is imported where the guards are installed.
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable

from optillm_proxy_launcher import usage
from optillm_proxy_launcher.policy import Policy, Refusal
from optillm_proxy_launcher.settings import ConfigRefused

# Keys the guards set in the WSGI environ; the gate reads them for the record.
RULE_KEY = "optillm_proxy.rule"
MODEL_KEY = "optillm_proxy.model"
APPROACH_KEY = "optillm_proxy.approach"
BASE_MODEL_KEY = "optillm_proxy.base_model"

CHAT_ENDPOINT = "proxy"
# A body over the limit is read and dropped up to this much, so the client (which sends the whole
# body before reading) sees the 413 instead of a reset; beyond it the connection is just closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Route:
    path: str
    method: str  # the one method served, as registered
    endpoint: str | None  # stock's endpoint; None: answered before Flask (the gate)
    what: str


ROUTES = (
    Route("/v1/chat/completions", "POST", CHAT_ENDPOINT,
          "optillm's chat completion; the request policy runs inside the view, on every request routed to it"),
    Route("/v1/models", "GET", "proxy_models", "the upstream's model list (one upstream call)"),
    Route("/health", "GET", "health", "liveness; no key"),
    Route("/metrics", "GET", None, "Prometheus metrics, answered by the gate before optillm; no key"),
)
BY_PATH = {route.path: route for route in ROUTES}
METRICS = BY_PATH["/metrics"]

# optillm 0.3.12's url_map, as Flask builds it: (rule, endpoint, methods). The guards above rely on
# exactly these; verify() refuses to start on anything else.
STOCK_URL_MAP = frozenset({
    ("/v1/chat/completions", "proxy", frozenset({"POST", "OPTIONS"})),
    ("/v1/models", "proxy_models", frozenset({"GET", "HEAD", "OPTIONS"})),
    ("/health", "health", frozenset({"GET", "HEAD", "OPTIONS"})),
    # Flask's static route (optillm ships no static folder); refused here as an unknown route.
    ("/static/<path:filename>", "static", frozenset({"GET", "HEAD", "OPTIONS"})),
})

# What every other request gets, by rule (tools/gen_docs.py renders this next to ROUTES).
STATUS = {"unknown-route": 404, "method-not-allowed": 405, "method-not-canonical": 400,
          "target-not-canonical": 400, "invalid-host": 400}
REFUSED = (
    ("any path not in the table (stock's `/static/...` included)", "any", "unknown-route"),
    ("a route of the table", "any other method, HEAD and OPTIONS included", "method-not-allowed"),
    ("a route of the table", "its method in other letter case (`post`; waitress refuses it first, as "
     "`malformed-request`)", "method-not-canonical"),
    ("a route's path spelled otherwise (`/%2Fv1/...`, `/v1//chat/...`, `/v1/./...`, a trailing `/`, "
     "`http://host/v1/...`)", "any", "target-not-canonical"),
    ("any", "any, with a Host header that is not a host name", "invalid-host"),
)


def request_target(environ: dict) -> tuple[str, str | None]:
    """(the path as routed, the raw path as sent or None when the server does not pass it)."""
    routed = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return routed, (raw.split("?", 1)[0] if raw is not None else None)


def canonical_route(environ: dict) -> Route | None:
    """The route this request names exactly as written (path and method), else None."""
    routed, raw = request_target(environ)
    route = BY_PATH.get(routed)
    if route is None or (raw is not None and raw != route.path):
        return None
    return route if environ.get("REQUEST_METHOD") == route.method else None


def is_metrics(environ: dict) -> bool:
    return canonical_route(environ) is METRICS


def decide(environ: dict, endpoint: str | None, routing_error: Any = None) -> Refusal | None:
    """None when the request is exactly a route of ROUTES that the router sent to its endpoint.

    `endpoint` is the router's (None when it matched nothing), `routing_error` its exception:
    werkzeug's NotFound, MethodNotAllowed, RequestRedirect (merged slashes) or BadHost."""
    method = environ.get("REQUEST_METHOD", "")
    routed, raw = request_target(environ)
    shown = (raw if raw is not None else routed)[:200]
    if getattr(routing_error, "code", None) == 400:  # BadHost: the Host header is no host name
        return _refuse("invalid-host", "the Host header is not a valid host name; send the proxy's address, "
                                       "e.g. Host: 127.0.0.1")
    route = BY_PATH.get(routed) if raw is None or raw == routed else None
    if route is None:
        # Which route the client meant: where the router went, or the path with slashes and dot
        # segments tidied (the router answers those with a redirect or a 404).
        target = next((r for r in ROUTES if r.endpoint is not None and r.endpoint == endpoint), None)
        target = target or BY_PATH.get(_tidy(routed))
        if target is None:
            return _refuse("unknown-route", f"{shown!r} is not a route of this proxy; it serves {_served()}")
        return _refuse("target-not-canonical", f"the request target {shown!r} is not written as the route's "
                                               f"path: send {target.method} {target.path}")
    if method != route.method:
        if method.upper() == route.method:
            return _refuse("method-not-canonical", f"method {method[:20]!r}: send {route.method} {route.path} "
                                                   "(methods are case-sensitive)")
        return _refuse("method-not-allowed", f"{route.path} answers {route.method} only, not {method[:20]!r}",
                       headers=(("Allow", route.method),))
    if route.endpoint is None or endpoint != route.endpoint:
        # Answered before optillm (the gate's /metrics, when metrics are off) or not where the router
        # went: nothing here serves it.
        return _refuse("unknown-route", f"{route.method} {route.path} is not served by this process")
    return None


def _refuse(rule: str, message: str, headers=()) -> Refusal:
    return Refusal(STATUS[rule], rule, message, headers=headers)


def _served() -> str:
    return ", ".join(f"{r.method} {r.path}" for r in ROUTES)


def _tidy(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


# -- the body ---------------------------------------------------------------------------------------


def admit(request, policy: Policy) -> Refusal | None:
    """Read the body of a chat completion (bounded) and apply the policy; sets what the record needs.

    The body is read once through werkzeug's own stream and cached (`get_data(cache=True)`), so
    stock's `request.get_json()` parses the very bytes the policy accepted."""
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    environ = request.environ
    limit = policy.settings.max_request_bytes
    length = environ.get("CONTENT_LENGTH")
    if length and not re.fullmatch(r"[0-9]+", length.strip()):
        return Refusal(400, "invalid-body", "Content-Length is not a number")
    # Flask 3.1 sets the bound per request. One byte over it: werkzeug stops a chunked body at the
    # bound without an error, so only a body that reaches limit + 1 is known to be too large.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raw = None
    except HTTPException:  # the client went away before its Content-Length was read
        return Refusal(400, "invalid-body", "the body ended before its Content-Length")
    if raw is None or len(raw) > limit:
        _drain(environ["wsgi.input"], min(request.content_length or DRAIN_LIMIT_BYTES, DRAIN_LIMIT_BYTES))
        shown = f"has {request.content_length} bytes" if request.content_length else f"is larger than {limit} bytes"
        return Refusal(413, "body-too-large", f"the body {shown}; this proxy accepts at most {limit} "
                                              "(MAX_REQUEST_BYTES)")
    verdict = policy.check(raw, environ.get("CONTENT_TYPE"))
    environ[MODEL_KEY] = verdict.model
    if isinstance(verdict, Refusal):
        return verdict
    environ[APPROACH_KEY] = verdict.approach
    environ[BASE_MODEL_KEY] = verdict.base_model
    environ[usage.ENVIRON_STREAM_USAGE] = usage.wants_stream_usage(verdict.body)
    body = usage.without_stream_options(verdict.body, raw)
    if body is not raw:
        # stock's get_json() parses werkzeug's cached body: it gets the one without stream_options.
        request._cached_data = body
    return None


def _drain(stream, limit: int) -> None:
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
    except OSError as exc:  # the client went away while we dropped its body
        import sys

        print(f"optillm-proxy-launcher: dropping an oversized body: {exc}", file=sys.stderr)


# -- installing the guards --------------------------------------------------------------------------


def verify(app, check_api_key: Callable) -> None:
    """Refuse (exit 78) unless the app's routes, views and hooks are what the guards rely on."""
    found = frozenset((rule.rule, rule.endpoint, frozenset(rule.methods or ())) for rule in app.url_map.iter_rules())
    if found != STOCK_URL_MAP:
        changed = sorted(rule for rule, *_ in found ^ STOCK_URL_MAP)
        raise ConfigRefused(f"optillm's routes differ from 0.3.12 ({', '.join(changed)}): reinstall the runtime "
                            "from the toolkit's locks/")
    if not callable(app.view_functions.get(CHAT_ENDPOINT)):
        raise ConfigRefused(f"optillm's app has no {CHAT_ENDPOINT!r} view: reinstall the runtime from the "
                            "toolkit's locks/")
    hooks = dict(app.before_request_funcs)
    if hooks != {None: [check_api_key]}:
        raise ConfigRefused("optillm's before_request hooks are not 0.3.12's check_api_key alone: reinstall "
                            "the runtime from the toolkit's locks/")


def install(app, policy: Policy) -> None:
    """Wrap the chat view and append the route hook (after optillm's check_api_key)."""
    from flask import request

    stock_view = app.view_functions[CHAT_ENDPOINT]

    @functools.wraps(stock_view)
    def guarded_chat(*args, **kwargs):
        refusal = admit(request, policy)
        if refusal is not None:
            return _answer(request.environ, refusal)
        return stock_view(*args, **kwargs)

    def refuse_other_routes():
        refusal = decide(request.environ, request.endpoint, request.routing_exception)
        return _answer(request.environ, refusal) if refusal is not None else None

    app.view_functions[CHAT_ENDPOINT] = guarded_chat
    app.before_request(refuse_other_routes)


def _answer(environ: dict, refusal: Refusal):
    from flask import Response

    environ[RULE_KEY] = refusal.rule
    return Response(refusal.body(), status=refusal.status, mimetype="application/json",
                    headers=list(refusal.headers))
