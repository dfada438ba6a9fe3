"""The WSGI layer in front of optillm's Flask app (Flask's documented `app.wsgi_app` wrapping).

Per request: open a RequestContext (deadline, upstream accounting); for chat completions from an
authenticated caller, bound and read the body, apply the policy (refusals never reach optillm);
after optillm answered, say what really happened upstream: 504 when the deadline or a call's
timeout ended it, 502/429 when LiteLLM failed and optillm answered 500 or built an answer from no
successful call. optillm's own key check stays the one authentication: an unauthenticated request
goes straight to it (401) without the policy telling it anything.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from optillm_proxy_launcher.policy import Policy, Refusal
from optillm_proxy_launcher.upstream import RequestContext, Registry

CHAT_PATH = "/v1/chat/completions"
# A body over the limit is read and dropped up to this much, so the client (which sends the whole
# body before reading) sees the 413 instead of a reset; beyond it the connection is just closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, kind: str, code: str, message: str, headers=()) -> Answer:
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    return Answer(status, body, tuple(headers))


STATUS_TEXT = {400: "BAD REQUEST", 413: "REQUEST ENTITY TOO LARGE", 415: "UNSUPPORTED MEDIA TYPE",
               429: "TOO MANY REQUESTS", 500: "INTERNAL SERVER ERROR", 502: "BAD GATEWAY", 504: "GATEWAY TIMEOUT"}


class Gate:
    def __init__(self, app: Callable, policy: Policy, registry: Registry, upstream_url: str,
                 proxy_key: Callable[[], str]) -> None:
        self.app = app
        self.policy = policy
        self.registry = registry
        self.upstream_url = upstream_url
        self.proxy_key = proxy_key

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        settings = self.policy.settings
        ctx = RequestContext(deadline=0.0, deadline_seconds=settings.deadline)
        ctx.deadline = ctx.started + settings.deadline
        environ["optillm_proxy.request"] = ctx
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") == CHAT_PATH \
                and self._authenticated(environ):
            refusal = self._admit(environ)
            if refusal is not None:
                return self._send(start_response, Answer(refusal.status, refusal.body()), ctx)
        self.registry.open(ctx)
        try:
            captured: list = []
            result = self.app(environ, lambda status, headers, exc_info=None: captured.append(
                (status, headers, exc_info)) or (lambda data: None))
            if not captured:  # a WSGI app must start the response before returning; be safe
                captured.append(("500 INTERNAL SERVER ERROR", [], None))
            status, headers, exc_info = captured[0]
            replacement = self._replacement(ctx, int(status.split(" ", 1)[0]))
            if replacement is not None:
                close = getattr(result, "close", None)
                if close:
                    close()
                return self._send(start_response, replacement, ctx)
            start_response(status, headers, exc_info)
            return _Closing(result, lambda: self.registry.close(ctx))
        except BaseException:
            self.registry.close(ctx)
            raise

    # -- before optillm --------------------------------------------------------------------------

    def _authenticated(self, environ: dict) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Bearer "):
            return False
        return secrets.compare_digest(header.split("Bearer ", 1)[1].strip().encode(), self.proxy_key().encode())

    def _admit(self, environ: dict) -> Refusal | None:
        limit = self.policy.settings.max_request_bytes
        stream = environ["wsgi.input"]
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return Refusal(400, "invalid-body", "Content-Length is not a number")
        if length > limit:
            _drain(stream, min(length, DRAIN_LIMIT_BYTES))
            return Refusal(413, "body-too-large", f"the body has {length} bytes; this proxy accepts at most "
                                                  f"{limit} (MAX_REQUEST_BYTES)")
        if length >= 0:
            raw = stream.read(length)
        elif environ.get("wsgi.input_terminated"):  # chunked: werkzeug ends the stream at the last chunk
            raw = stream.read(limit + 1)
        else:  # HTTP/1.1: no length and no chunking means no body
            raw = b""
        if len(raw) > limit:
            _drain(stream, DRAIN_LIMIT_BYTES)
            return Refusal(413, "body-too-large", f"the body is larger than {limit} bytes (MAX_REQUEST_BYTES)")
        verdict = self.policy.check(raw, environ.get("CONTENT_TYPE"))
        if isinstance(verdict, Refusal):
            return verdict
        environ["optillm_proxy.approach"] = verdict.approach
        environ["wsgi.input"] = io.BytesIO(raw)
        environ["CONTENT_LENGTH"] = str(len(raw))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        return None

    # -- after optillm ---------------------------------------------------------------------------

    def _replacement(self, ctx: RequestContext, status: int) -> Answer | None:
        """What the client should get instead of optillm's answer, given what happened upstream."""
        with ctx.lock:
            deadline_hit, timed_out = ctx.deadline_hit, ctx.timed_out
            failures, ok, upstream_status = list(ctx.failures), ctx.ok, ctx.last_failure_status
        if deadline_hit:
            return _error(504, "deadline_exceeded", "deadline_exceeded",
                          f"the request ran into this proxy's deadline of {ctx.deadline_seconds:g} s "
                          f"(REQUEST_DEADLINE_SECONDS) after {ok} successful and {len(failures)} failed "
                          f"upstream call(s); no further upstream call was started")
        if not failures or (status < 500 and ok > 0):
            return None
        summary = (f"{len(failures)} of {ok + len(failures)} upstream call(s) to {self.upstream_url} failed; "
                   f"last: {failures[-1]}")
        if timed_out:
            return _error(504, "upstream_timeout", "upstream_timeout",
                          f"upstream error: {summary} (UPSTREAM_TIMEOUT_SECONDS)")
        if upstream_status == 429:
            return _error(429, "upstream_error", "upstream_rate_limited", f"upstream error: {summary}")
        if upstream_status in (401, 403):
            return _error(502, "upstream_error", "upstream_key_refused",
                          f"upstream error: {summary} (LiteLLM refused the proxy's OPENAI_API_KEY)")
        if upstream_status is not None and 400 <= upstream_status < 500:
            # LiteLLM judged the request itself invalid: the client's to fix, as a 400.
            return _error(400, "invalid_request_error", "upstream_rejected", f"upstream rejected the request: {summary}")
        return _error(502, "upstream_error", "upstream_error", f"upstream error: {summary}")

    def _send(self, start_response: Callable, answer: Answer, ctx: RequestContext) -> list[bytes]:
        self.registry.close(ctx)
        start_response(f"{answer.status} {STATUS_TEXT.get(answer.status, 'ERROR')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(answer.body))),
                        *answer.headers])
        return [answer.body]


class _Closing:
    """The app's response iterable, plus our cleanup once the server is done with it (streams too)."""

    def __init__(self, result: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close = on_close

    def __iter__(self):
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close:
                close()
        finally:
            self._on_close()


def _drain(stream, limit: int) -> None:
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
    except OSError as exc:  # the client went away while we dropped its body
        print(f"optillm-proxy-launcher: dropping an oversized body: {exc}", file=sys.stderr)
