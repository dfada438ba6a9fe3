"""The WSGI layer in front of optillm's Flask app (Flask's documented `app.wsgi_app` wrapping).

Per request: open a RequestContext (deadline, upstream accounting) and hand the request to Flask,
where routes.py decides which requests reach optillm's views and runs the policy inside the chat
view (after optillm's own key check, the one authentication); after optillm answered, say what
really happened upstream: 504 when the deadline or a call's timeout ended it, 502/429 when
LiteLLM failed and optillm answered 500 or built an answer from no successful call.

An Authorization header that is not ASCII is dropped before Flask sees it: it cannot hold the
proxy key, and 0.3.12's check_api_key would crash comparing it (a 500); optillm answers its own 401.

When the answer is done (the server closed it, streams included), one Record goes to the journal
and to the metrics. GET /metrics is answered here, before Flask (no key: see metrics.py); /health
and /metrics themselves are not recorded (probes every few seconds would drown the requests),
unless refused.

optillm's answer to an admitted chat completion reports what the request spent upstream (its
`usage`, the x-optillm-proxy-upstream-calls header: usage.py).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from optillm_proxy_launcher.closing import Closing
from optillm_proxy_launcher.layout import UPSTREAM_KEY_FILE
from optillm_proxy_launcher import routes, usage
from optillm_proxy_launcher.policy import Policy
from optillm_proxy_launcher.records import NO_APPROACH, Record
from optillm_proxy_launcher.upstream import RequestContext, Registry

UNRECORDED_PATHS = ("/health", routes.METRICS.path)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    code: str = ""  # the error's code, for the record


def _error(status: int, kind: str, code: str, message: str, headers=()) -> Answer:
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    return Answer(status, body, tuple(headers), code)




STATUS_TEXT = {400: "BAD REQUEST", 429: "TOO MANY REQUESTS", 500: "INTERNAL SERVER ERROR", 502: "BAD GATEWAY",
               504: "GATEWAY TIMEOUT"}


class Gate:
    def __init__(self, app: Callable, policy: Policy, registry: Registry, upstream_url: str,
                 observers: Iterable[Callable[[Record], None]] = (),
                 metrics_app: Callable | None = None, in_flight=None) -> None:
        self.app = app
        self.policy = policy
        self.registry = registry
        self.upstream_url = upstream_url
        self.observers = tuple(observers)
        self.metrics_app = metrics_app
        self.in_flight = in_flight  # a prometheus Gauge, or None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.metrics_app is not None and routes.is_metrics(environ):
            return self.metrics_app(environ, start_response)
        if not environ.get("HTTP_AUTHORIZATION", "").isascii():
            del environ["HTTP_AUTHORIZATION"]
        settings = self.policy.settings
        ctx = RequestContext(deadline=0.0, deadline_seconds=settings.deadline)
        ctx.deadline = ctx.started + settings.deadline
        environ["optillm_proxy.request"] = ctx
        if self.in_flight is not None:
            self.in_flight.inc()
        try:
            self.registry.open(ctx)
            captured: list = []
            result = self.app(environ, lambda status, headers, exc_info=None: captured.append(
                (status, headers, exc_info)) or (lambda data: None))
            if not captured:  # a WSGI app must start the response before returning; be safe
                captured.append(("500 INTERNAL SERVER ERROR", [], None))
            status, headers, exc_info = captured[0]
            code = int(status.split(" ", 1)[0])
            replacement = self._replacement(ctx, code)
            if replacement is not None:
                close = getattr(result, "close", None)
                if close:
                    close()
                return self._send(start_response, replacement, ctx, environ)
            headers, result = usage.account(environ, ctx, code, headers, result, settings.usage)
            start_response(status, headers, exc_info)
            return Closing(result, lambda: self._finish(ctx, environ, code, environ.get(routes.RULE_KEY, "")))
        except BaseException:
            self._finish(ctx, environ, 500, "internal_error")
            raise

    def record_refused(self, environ: dict, status: int, rule: str) -> None:
        """A request the server refused itself, before this layer saw it (serving.json_channel):
        recorded and counted like any refusal, under `rule`."""
        settings = self.policy.settings
        ctx = RequestContext(deadline=0.0, deadline_seconds=settings.deadline)
        environ[routes.RULE_KEY] = rule
        if self.in_flight is not None:
            self.in_flight.inc()  # _finish counts it out again
        self._finish(ctx, environ, status, rule)

    # -- after optillm ---------------------------------------------------------------------------

    def _replacement(self, ctx: RequestContext, status: int) -> Answer | None:
        """What the client should get instead of optillm's answer, given what happened upstream.

        The client reads a fixed reason (the upstream's status, never its text: LiteLLM's 401 quotes
        the key it was given); the upstream's own words go to stderr, the journal, where the
        launcher's redacting stream (redact.py) takes keys and bearer tokens out."""
        with ctx.lock:
            deadline_hit, timed_out = ctx.deadline_hit, ctx.timed_out
            failures, ok, upstream_status = list(ctx.failures), ctx.ok, ctx.last_failure_status
            skipped, refused_status = ctx.skipped, ctx.refused_status
        if deadline_hit:
            return _error(504, "deadline_exceeded", "deadline_exceeded",
                          f"the request ran into this proxy's deadline of {ctx.deadline_seconds:g} s "
                          f"(REQUEST_DEADLINE_SECONDS) after {ok} successful and {len(failures)} failed "
                          f"upstream call(s); no further upstream call was started")
        if not failures or (status < 500 and ok > 0):
            return None
        upstream_status = refused_status or upstream_status  # what stopped the request, if anything did
        operator_hint = ""
        if timed_out:
            answer = (504, "upstream_timeout", "upstream_timeout",
                      "an upstream call timed out (UPSTREAM_TIMEOUT_SECONDS)")
        elif upstream_status == 429:
            answer = (429, "upstream_error", "upstream_rate_limited", "the upstream is rate-limiting this proxy (HTTP 429)")
        elif upstream_status in (401, 403):
            answer = (502, "upstream_error", "upstream_key_refused",
                      f"the upstream refused this proxy's credentials (HTTP {upstream_status})")
            operator_hint = (f" (LiteLLM refused the proxy's key in {UPSTREAM_KEY_FILE}, or the model behind "
                             "LiteLLM refused LiteLLM's key for it: the upstream's words above say which)")
        elif upstream_status is not None and 400 <= upstream_status < 500:
            # LiteLLM judged the request itself invalid: the client's to fix, as a 400.
            answer = (400, "invalid_request_error", "upstream_rejected",
                      f"the upstream rejected the request (HTTP {upstream_status})")
        elif upstream_status is not None:
            answer = (502, "upstream_error", "upstream_error", f"the upstream failed (HTTP {upstream_status})")
        else:
            answer = (502, "upstream_error", "upstream_error", "no connection to the upstream (refused or failed)")
        client_status, kind, code, reason = answer
        calls = ok + len(failures)
        not_sent = f"; {skipped} more not sent after HTTP {refused_status}" if skipped else ""
        print(f"optillm-proxy-launcher: request {ctx.id}: {code} ({client_status} to the client): {len(failures)} "
              f"of {calls} upstream call(s) to {self.upstream_url} failed{not_sent}; last: {failures[-1]}"
              f"{operator_hint}", file=sys.stderr, flush=True)
        return _error(client_status, kind, code,
                      f"upstream error: {reason}; {len(failures)} of {calls} upstream call(s) failed"
                      f"{not_sent} (the proxy's journal has the detail, request {ctx.id})")

    def _send(self, start_response: Callable, answer: Answer, ctx: RequestContext, environ: dict):
        start_response(f"{answer.status} {STATUS_TEXT.get(answer.status, 'ERROR')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(answer.body))),
                        *answer.headers])
        return Closing([answer.body], lambda: self._finish(ctx, environ, answer.status, answer.code))

    def _finish(self, ctx: RequestContext, environ: dict, status: int, error_code: str) -> None:
        """Once per request, when the server is done with the answer: close, record, count."""
        if ctx.finished:
            return
        self.registry.close(ctx)
        if self.in_flight is not None:
            self.in_flight.dec()
        path = environ.get("PATH_INFO", "")
        rule = environ.get(routes.RULE_KEY, "")
        if (path in UNRECORDED_PATHS and not rule) or not self.observers:
            return
        with ctx.lock:
            record = Record(
                request_id=ctx.id, method=environ.get("REQUEST_METHOD", ""), path=path[:200],
                model=environ.get(routes.MODEL_KEY, ""),
                approach=environ.get(routes.APPROACH_KEY, NO_APPROACH),
                base_model=environ.get(routes.BASE_MODEL_KEY, ""), status=status,
                duration_ms=round((time.monotonic() - ctx.started) * 1000), upstream_calls=ctx.calls,
                upstream_prompt_tokens=ctx.prompt_tokens, upstream_completion_tokens=ctx.completion_tokens,
                upstream_errors=len(ctx.failures), upstream_retries=ctx.retries, upstream_skipped=ctx.skipped,
                deadline_hit=int(ctx.deadline_hit), upstream_timeout=int(ctx.timed_out),
                policy_rule=rule, error_code=error_code)
        for observe in self.observers:
            try:
                observe(record)
            except Exception as exc:  # a record must never cost the client its answer
                print(f"optillm-proxy-launcher: could not record request {ctx.id}: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)

