"""One upstream client per process, bounded per call and per request, and what each request cost.

0.3.12 builds a new `httpx.Client(verify=True)` (a new SSL context) and `OpenAI` client for every
request and never closes them; its calls inherit openai-python's 600 s timeout and 2 retries, with
nothing bounding a whole request. Here:
- one `httpx.Client` (keep-alive pool) under one `OpenAI` client with max_retries=0, built once;
- each request gets a cheap view of it (`with_options`, same pool) whose default header names the
  request, so calls made on optillm's worker threads are still attributed to the right request;
- `BoundedTransport` strips that header, refuses a call once the request's deadline has passed,
  caps each call's timeouts at the per-call bound and the time left, retries refused connections,
  429 and 5xx (never past the deadline) and counts calls, failures, retries and usage tokens;
- after a request's first non-transient answer (the key refused, the request rejected), the
  request's further calls are answered here with the same status and never reach LiteLLM: an
  approach that catches the error and asks again (moa's fallback, a plugin's per-sample loop)
  would only hear the same refusal several times. One exception: a 400 to a call that asked for
  several choices (n > 1) stops nothing, since 0.3.12's approaches answer "n not supported" by
  asking for the choices one by one, which a provider without `n` accepts.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field

import httpx

REQUEST_HEADER = "x-optillm-proxy-request"
CONNECT_TIMEOUT_SECONDS = 5.0  # LiteLLM is on loopback: a connect slower than this is a dead peer
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that the same request asking again cannot change: the key refused (401, 403), the
# request itself rejected (400, an unknown model 404, 422).
NON_TRANSIENT_STATUSES = frozenset({400, 401, 403, 404, 422})
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 4.0
_ids = itertools.count(1)


class DeadlineExceeded(httpx.TimeoutException):
    """No new upstream call starts after the request's deadline (openai maps it to a timeout)."""


@dataclass
class RequestContext:
    """One client request: its deadline and what its upstream calls did. Updated from any thread."""

    deadline: float  # time.monotonic() value
    deadline_seconds: float
    id: str = field(default_factory=lambda: f"{next(_ids):x}-{random.getrandbits(32):08x}")
    started: float = field(default_factory=time.monotonic)
    calls: int = 0  # upstream calls that got an answer (any status)
    ok: int = 0  # ... with a 2xx status
    retries: int = 0
    failures: list[str] = field(default_factory=list)  # one short reason per failed call
    last_failure_status: int | None = None  # the upstream's HTTP status of the last failure
    timed_out: bool = False  # a call hit its timeout
    deadline_hit: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refused_status: int | None = None  # the first non-transient answer: later calls are not sent
    skipped: int = 0  # calls answered here because of it (never sent, not in `calls`)
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class Registry:
    """Requests in flight by id, so the transport finds the request a call belongs to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, RequestContext] = {}
        self.current = threading.local()  # the context of the request this thread serves

    def open(self, ctx: RequestContext) -> None:
        with self._lock:
            self._open[ctx.id] = ctx
        self.current.ctx = ctx

    def close(self, ctx: RequestContext) -> None:
        ctx.finished = True
        with self._lock:
            self._open.pop(ctx.id, None)
        if getattr(self.current, "ctx", None) is ctx:
            self.current.ctx = None

    def find(self, request_id: str) -> RequestContext | None:
        with self._lock:
            return self._open.get(request_id)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._open)


@dataclass(frozen=True)
class Bounds:
    timeout: float
    retries: int


class BoundedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, bounds: Bounds, registry: Registry,
                 sleep=time.sleep) -> None:
        self.inner = inner
        self.bounds = bounds
        self.registry = registry
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request_id = request.headers.pop(REQUEST_HEADER, None)
        ctx = self.registry.find(request_id) if request_id else None
        if request_id and ctx is None:
            # The request this call belongs to has ended (an approach's thread outlived it).
            raise DeadlineExceeded("the client request this upstream call belongs to has already ended",
                                   request=request)
        if ctx is not None and ctx.refused_status is not None:
            return self._skip(ctx, request)
        attempt = 0
        while True:
            timeout = self._timeout(ctx, request)
            try:
                response = self.inner.handle_request(self._with_timeout(request, timeout))
            except httpx.TimeoutException as exc:
                self._failed(ctx, f"timed out after {timeout:g} s ({type(exc).__name__})", timed_out=True)
                raise
            except httpx.TransportError as exc:
                self._failed(ctx, f"{type(exc).__name__}: {exc}")
                if isinstance(exc, httpx.ConnectError) and self._retry(ctx, attempt, None):
                    attempt += 1
                    continue
                raise
            if response.status_code in RETRY_STATUSES:
                if self._retry(ctx, attempt, response):
                    self._answered(ctx, response, request)
                    response.close()
                    attempt += 1
                    continue
            self._answered(ctx, response, request)
            return response

    def _timeout(self, ctx: RequestContext | None, request: httpx.Request) -> float:
        if ctx is None:
            return self.bounds.timeout
        left = ctx.remaining()
        if left <= 0:
            with ctx.lock:
                ctx.deadline_hit = True
            raise DeadlineExceeded(f"the request deadline ({ctx.deadline_seconds:g} s, "
                                   "REQUEST_DEADLINE_SECONDS) has passed: no new upstream call", request=request)
        return min(self.bounds.timeout, left)

    @staticmethod
    def _with_timeout(request: httpx.Request, timeout: float) -> httpx.Request:
        request.extensions = {**request.extensions, "timeout": {
            "connect": min(CONNECT_TIMEOUT_SECONDS, timeout), "read": timeout, "write": timeout, "pool": timeout}}
        return request

    def _retry(self, ctx: RequestContext | None, attempt: int, response: httpx.Response | None) -> bool:
        if attempt >= self.bounds.retries:
            return False
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** attempt) * random.uniform(0.75, 1.0)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = min(BACKOFF_MAX_SECONDS, max(delay, float(retry_after)))
            except ValueError:
                pass
        if ctx is not None:
            if ctx.remaining() <= delay:
                return False  # waiting would only end at the deadline
            with ctx.lock:
                ctx.retries += 1
        self.sleep(delay)
        return True

    def _failed(self, ctx: RequestContext | None, reason: str, *, status: int | None = None,
                timed_out: bool = False) -> None:
        if ctx is None:
            return
        with ctx.lock:
            ctx.failures.append(reason)
            ctx.last_failure_status = status
            ctx.timed_out |= timed_out
            if timed_out and ctx.remaining() <= 0:
                ctx.deadline_hit = True

    def _answered(self, ctx: RequestContext | None, response: httpx.Response, request: httpx.Request) -> None:
        if ctx is None:
            return
        if response.is_success:
            # optillm never streams from upstream; the body is small JSON read once here and
            # kept by httpx for openai-python to parse.
            usage = _usage(response.read())
            with ctx.lock:
                ctx.calls += 1
                ctx.ok += 1
                ctx.prompt_tokens += usage[0]
                ctx.completion_tokens += usage[1]
            return
        status = response.status_code
        reason = f"HTTP {status}{_error_message(response.read())}"
        stops = status in NON_TRANSIENT_STATUSES and not (status == 400 and _asks_several(request))
        with ctx.lock:
            ctx.calls += 1
            ctx.failures.append(reason)
            ctx.last_failure_status = status
            if stops and ctx.refused_status is None:
                ctx.refused_status = status

    @staticmethod
    def _skip(ctx: RequestContext, request: httpx.Request) -> httpx.Response:
        """The answer to a call not sent: the request's first non-transient status, our own words."""
        with ctx.lock:
            ctx.skipped += 1
            status = ctx.refused_status
        message = (f"not sent by optillm-proxy: an earlier upstream call of this request was answered "
                   f"HTTP {status}, which asking again cannot change")
        return httpx.Response(status, json={"error": {"message": message, "type": "upstream_refused_earlier",
                                                      "code": status}}, request=request)


ERROR_MESSAGE_CHARS = 400


def _error_message(content: bytes) -> str:
    """`: <the upstream's own error message>` (bounded, one line), or nothing.

    For the journal only (gateway.py), where redact.py takes keys out; it recognises a key only
    whole, so the bound cuts between words, never inside one (keys hold no whitespace)."""
    try:
        error = json.loads(content).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        return ""
    words, length = [], 0
    for word in str(message).split() if message else ():
        length += len(word) + 1
        if length > ERROR_MESSAGE_CHARS:
            words.append("...")
            break
        words.append(word)
    return f": {' '.join(words)}" if words else ""


def _asks_several(request: httpx.Request | None) -> bool:
    """Whether the call asked for more than one choice (`n` > 1 in its JSON body)."""
    try:
        n = json.loads(request.content).get("n") if request is not None else None
    except (ValueError, AttributeError, httpx.RequestNotRead):
        return False
    return isinstance(n, int) and n > 1


def _usage(content: bytes) -> tuple[int, int]:
    try:
        usage = json.loads(content).get("usage") or {}
        prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        return (prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)
    except (ValueError, AttributeError):
        return 0, 0


class SharedUpstream:
    """The process's one OpenAI client for LiteLLM, built on first use (after optillm parsed its flags)."""

    def __init__(self, api_key: str, base_url: str, bounds: Bounds, registry: Registry,
                 verify: bool | str = True) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.bounds = bounds
        self.registry = registry
        self.verify = verify
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def _build(self):
        from openai import OpenAI

        transport = BoundedTransport(httpx.HTTPTransport(verify=self.verify), self.bounds, self.registry)
        http_client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(self.bounds.timeout, connect=CONNECT_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        return OpenAI(api_key=self.api_key, base_url=self.base_url, http_client=http_client, max_retries=0,
                      timeout=httpx.Timeout(self.bounds.timeout, connect=CONNECT_TIMEOUT_SECONDS))

    def for_current_request(self):
        """The client optillm gets for this request: the shared pool, tagged with the request's id."""
        ctx = getattr(self.registry.current, "ctx", None)
        client = self.client()
        if ctx is None:
            return client
        return client.with_options(default_headers={REQUEST_HEADER: ctx.id})
