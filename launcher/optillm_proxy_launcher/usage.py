"""What a chat completion's answer says it cost: the tokens its upstream calls spent, summed.

Stock 0.3.12 builds a strategy's answer with `usage: {completion_tokens, completion_tokens_details}`
where completion_tokens is optillm's own tally (the final answer's share for some approaches) and
no prompt or total tokens: LiteLLM bills the caller's key from that and records prompt 0, total 0.
The transport (upstream.py) already counts every upstream call of a request and the usage each
successful one reported (a retried call counts once: a failed attempt has no usage). Here, once
optillm answered:

- a strategy's JSON answer gets `usage` = {prompt_tokens, completion_tokens, total_tokens} summed
  over those calls, in OpenAI's shape; optillm's own object is kept as `usage.optillm_reported`;
- a pass-through answer (approach none) is the upstream's own body: its usage is that one call's,
  already right, so the body is left as it is (no second count);
- a streamed answer whose request asked `stream_options: {"include_usage": true}` gets OpenAI's
  final chunk (`choices: []` and the same usage) before `data: [DONE]`, and `usage: null` on the
  chunks before it; without include_usage the stream is not touched;
- every answer optillm gives an admitted chat completion carries the header
  x-optillm-proxy-upstream-calls (the record's upstream_calls).

PROXY_USAGE=stock keeps optillm's own usage (body and stream untouched; the header stays).
optillm never streams from the upstream and runs a strategy to its end before it answers, so the
figures are final when the answer starts. `stream_options` is the proxy's to honour: it is taken
out of the body optillm sees (optillm would pass it to the upstream on a call that does not stream,
which strict OpenAI-compatible servers refuse).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from optillm_proxy_launcher.settings import USAGE_CHOICES

CALLS_HEADER = "x-optillm-proxy-upstream-calls"
REPORTED_FIELD = "optillm_reported"  # optillm's own usage object, kept inside `usage`
STREAM_OPTIONS_FIELD = "stream_options"
UPSTREAM, STOCK = USAGE_CHOICES  # PROXY_USAGE
PASS_THROUGH = "none"  # the approach of the base model: optillm returns the upstream's body
DONE_EVENT = b"data: [DONE]"
ENVIRON_STREAM_USAGE = "optillm_proxy.stream_usage"  # set by the gateway from the admitted body


@dataclass(frozen=True)
class Spent:
    """What one request's upstream calls cost, as the upstream reported it."""

    calls: int
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def spent(ctx) -> Spent:
    """The request's figures so far (a RequestContext; read under its lock)."""
    with ctx.lock:
        return Spent(ctx.calls, ctx.prompt_tokens, ctx.completion_tokens)


# -- the request ---------------------------------------------------------------------------------


def wants_stream_usage(body: dict) -> bool:
    """OpenAI's rule: a streamed request with stream_options.include_usage true."""
    options = body.get(STREAM_OPTIONS_FIELD)
    return body.get("stream") is True and isinstance(options, dict) and options.get("include_usage") is True


def without_stream_options(body: dict, raw: bytes) -> bytes:
    """The body optillm gets: `raw` itself, or re-encoded without stream_options when it has them."""
    if STREAM_OPTIONS_FIELD not in body:
        return raw
    return json.dumps({k: v for k, v in body.items() if k != STREAM_OPTIONS_FIELD}).encode()


# -- the answer ----------------------------------------------------------------------------------


def rewrite_json(raw: bytes, cost: Spent) -> bytes | None:
    """A chat completion body with `usage` replaced by `cost` (optillm's kept aside), or None when
    `raw` is not a chat completion object (then it goes out as it is)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return None
    body["usage"] = {**cost.usage(), REPORTED_FIELD: body.get("usage")}
    return json.dumps(body).encode()


def usage_chunk(first: dict, cost: Spent, model: str) -> bytes:
    """OpenAI's last chunk of a stream with include_usage: no choices, the whole request's usage."""
    chunk = {"id": first.get("id") or "chatcmpl-optillm-proxy", "object": "chat.completion.chunk",
             "created": first.get("created") or int(time.time()), "model": first.get("model") or model,
             "choices": [], "usage": cost.usage()}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class StreamWithUsage:
    """An SSE answer passed through event by event, each chunk given `usage: null` and the usage
    chunk put before `data: [DONE]` (figures read then). A stream without [DONE] gets none."""

    def __init__(self, result: Iterable[bytes], cost: Callable[[], Spent], model: str = "") -> None:
        self._result = result
        self._cost = cost
        self._model = model
        self._first: dict | None = None

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        for data in self._result:
            pending += data if isinstance(data, bytes) else str(data).encode()
            *events, pending = pending.split(b"\n\n")
            out = b"".join(self._event(event) for event in events)
            if out:
                yield out
        if pending:
            yield pending

    def _event(self, event: bytes) -> bytes:
        if event.strip() == DONE_EVENT:
            return usage_chunk(self._first or {}, self._cost(), self._model) + event + b"\n\n"
        if event.startswith(b"data: "):
            try:
                chunk = json.loads(event[len(b"data: "):])
            except (UnicodeDecodeError, ValueError):
                chunk = None
            if isinstance(chunk, dict):
                if self._first is None:
                    self._first = chunk
                chunk.setdefault("usage", None)
                return b"data: " + json.dumps(chunk).encode() + b"\n\n"
        return event + b"\n\n"

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close:
            close()


def _header(headers: list, name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def account(environ: dict, ctx, status: int, headers: list, result: Iterable[bytes],
            mode: str) -> tuple[list, Iterable[bytes]]:
    """optillm's answer to an admitted chat completion, as the client gets it (see the module's
    docstring): headers and body iterable. Any other answer passes unchanged."""
    approach = environ.get("optillm_proxy.approach")
    if approach is None:  # not an admitted chat completion (refused, unauthenticated, another path)
        return headers, result
    cost = spent(ctx)
    headers = [*headers, (CALLS_HEADER, str(cost.calls))]
    if mode != UPSTREAM or status != 200:
        return headers, result
    content_type = _header(headers, "content-type").split(";", 1)[0].strip().lower()
    if content_type == "text/event-stream":
        if not environ.get(ENVIRON_STREAM_USAGE):
            return headers, result
        return headers, StreamWithUsage(result, lambda: spent(ctx), environ.get("optillm_proxy.model", ""))
    if content_type != "application/json" or approach == PASS_THROUGH:
        return headers, result
    try:
        raw = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    body = rewrite_json(raw, cost)
    if body is None:
        body = raw
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
    return headers, [body]
