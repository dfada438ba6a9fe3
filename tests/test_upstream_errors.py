"""Upstream errors, unit by unit (fast tier): a refused call is not repeated, the client reads a
fixed reason, the upstream's words go to stderr (the journal) only.

The same against real optillm 0.3.12 and an upstream that quotes the key back:
tests/test_upstream_errors_real.py.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from optillm_proxy_launcher import settings
from optillm_proxy_launcher.gateway import Gate
from optillm_proxy_launcher.policy import Policy
from optillm_proxy_launcher.upstream import (NON_TRANSIENT_STATUSES, REQUEST_HEADER, RETRY_STATUSES, BoundedTransport,
                                             Bounds, Registry, RequestContext)
from tests.test_request_policy import Scripted

UPSTREAM_KEY = "litellm-master-0123456789abcdef"
QUOTED = f"Authentication Error, Received API Key = Bearer {UPSTREAM_KEY}, Key Hash (Token) ={UPSTREAM_KEY}"


def quoting_upstream(*statuses) -> Scripted:
    """Answers each call with the next status of its script (then 200), its errors quoting the key."""
    return Scripted(*statuses, message=QUOTED)


def context(registry: Registry) -> RequestContext:
    ctx = RequestContext(deadline=time.monotonic() + 60, deadline_seconds=60)
    registry.open(ctx)
    return ctx


def calls(upstream: Upstream, bodies: list[dict], retries=1):
    registry = Registry()
    transport = BoundedTransport(upstream, Bounds(30, retries), registry, sleep=lambda s: None)
    ctx = context(registry)
    statuses = []
    with httpx.Client(transport=transport) as client:
        for body in bodies:
            statuses.append(client.post("http://upstream.test/v1/chat/completions", json=body,
                                        headers={REQUEST_HEADER: ctx.id}).status_code)
    return ctx, statuses


@pytest.mark.parametrize("status", [401, 403, 400, 404, 422])
def test_after_a_non_transient_answer_the_requests_further_calls_never_leave(status):
    upstream = quoting_upstream(status)
    # moa's shape: one n=3 call, then three single ones, then the aggregation.
    ctx, statuses = calls(upstream, [{"n": 1}, {}, {}, {}, {}])
    assert len(upstream.seen) == 1, "only the first call reached the upstream"
    assert statuses == [status] * 5, "the approach sees the same failure each time"
    assert (ctx.calls, ctx.skipped, ctx.refused_status, len(ctx.failures)) == (1, 4, status, 1)


def test_a_400_to_a_call_asking_for_several_choices_lets_the_one_by_one_fallback_through():
    """0.3.12's moa/bon answer a failed n=3 call by asking three times without n."""
    upstream = quoting_upstream(400)
    ctx, statuses = calls(upstream, [{"n": 3}, {}, {}, {}])
    assert statuses == [400, 200, 200, 200] and len(upstream.seen) == 4
    assert (ctx.skipped, ctx.refused_status) == (0, None)
    upstream = quoting_upstream(401)  # a refused key is refused whatever n was
    ctx, statuses = calls(upstream, [{"n": 3}, {}, {}, {}])
    assert statuses == [401] * 4 and len(upstream.seen) == 1 and ctx.skipped == 3


def test_another_request_is_not_stopped_by_this_ones_refusal():
    upstream = quoting_upstream(401)
    registry = Registry()
    transport = BoundedTransport(upstream, Bounds(30, 1), registry, sleep=lambda s: None)
    first, second = context(registry), context(registry)
    with httpx.Client(transport=transport) as client:
        post = lambda ctx: client.post("http://u.test/v1/chat/completions", json={},  # noqa: E731
                                       headers={REQUEST_HEADER: ctx.id}).status_code
        assert [post(first), post(first), post(second)] == [401, 401, 200]
    assert len(upstream.seen) == 2 and second.skipped == 0


@hsettings(max_examples=60, deadline=None)
@given(script=st.lists(st.sampled_from([200, 400, 401, 403, 404, 422, 429, 500, 503]), min_size=1, max_size=8),
       several=st.lists(st.booleans(), min_size=8, max_size=8))
def test_nothing_reaches_the_upstream_after_the_first_non_transient_answer(script, several):
    """The invariant, for any sequence of answers: the calls that reach the upstream stop at the
    first non-transient answer (a 400 to an n > 1 call excepted), and every call is either sent
    (counted in calls) or skipped (counted in skipped), never both."""
    upstream = quoting_upstream(*script)
    bodies = [{"n": 3} if several[i] else {} for i in range(8)]
    ctx, statuses = calls(upstream, bodies, retries=0)
    reached = [upstream.seen[i] for i in range(len(upstream.seen))]
    stop = None
    for i, request in enumerate(reached):
        status = script[i] if i < len(script) else 200
        if status in NON_TRANSIENT_STATUSES and not (status == 400 and json.loads(request.content).get("n") == 3):
            stop = i
            break
    if stop is not None:
        assert len(reached) == stop + 1
        assert statuses[stop + 1:] == [statuses[stop]] * (8 - stop - 1)
    assert ctx.calls == len(reached) and ctx.calls + ctx.skipped == 8
    assert not NON_TRANSIENT_STATUSES & RETRY_STATUSES


# --- what the client gets, what the journal gets ---------------------------------------------------

PROXY_KEY = "opx-unit-key-0123456789"


def gate_answer(effect, optillm_status=500):
    records = []
    registry = Registry()
    policy = Policy(settings.request_settings({}, [], settings.plugin_table()), frozenset({"none", "moa"}),
                    frozenset({"model", "messages"}))
    gate = Gate(lambda environ, start_response: (effect(environ["optillm_proxy.request"]),
                                                 start_response(f"{optillm_status} X", []), [b"{}"])[2],
                policy, registry, "http://127.0.0.1:4000/v1", [records.append])
    raw = json.dumps({"model": "moa-jerry-xl", "messages": [{"role": "user", "content": "hi"}]}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
               "HTTP_AUTHORIZATION": f"Bearer {PROXY_KEY}"}
    seen = {}
    out = gate(environ, lambda status, headers, exc_info=None: seen.update(status=status))
    body = b"".join(out)
    out.close()
    return int(seen["status"].split()[0]), json.loads(body), records[0]


def refused(status, skipped=0, reason=f"HTTP 401: {QUOTED}"):
    def effect(ctx):
        ctx.calls, ctx.failures, ctx.last_failure_status = 1, [reason], status
        ctx.refused_status, ctx.skipped = status, skipped
    return effect


@pytest.mark.parametrize("status,want,code", [(401, 502, "upstream_key_refused"), (403, 502, "upstream_key_refused"),
                                              (400, 400, "upstream_rejected"), (404, 400, "upstream_rejected"),
                                              (500, 502, "upstream_error"), (429, 429, "upstream_rate_limited")])
def test_the_client_reads_a_fixed_reason_and_the_journal_the_upstreams_words(capsys, status, want, code):
    got, body, record = gate_answer(refused(status, skipped=3, reason=f"HTTP {status}: {QUOTED}"))
    assert (got, body["error"]["code"]) == (want, code)
    message = body["error"]["message"]
    for leaked in (UPSTREAM_KEY, "Received API Key", "127.0.0.1:4000", "/etc/optillm-proxy", "upstream-key"):
        assert leaked not in message, message
    assert f"HTTP {status}" in message and record.request_id in message
    journal = capsys.readouterr().err
    assert f"request {record.request_id}: {code} ({want} to the client)" in journal
    assert "Received API Key" in journal and "http://127.0.0.1:4000/v1" in journal  # redact.py takes the key out
    assert (record.upstream_calls, record.upstream_skipped, record.upstream_errors) == (1, 3, 1)


def test_the_key_file_is_named_to_the_operator_only(capsys):
    _, body, _ = gate_answer(refused(401, skipped=8))
    assert "/etc/optillm-proxy/upstream-key" not in json.dumps(body)
    assert "LiteLLM refused the proxy's key in /etc/optillm-proxy/upstream-key" in capsys.readouterr().err
    assert body["error"]["message"].startswith("upstream error: the upstream refused this proxy's credentials "
                                               "(HTTP 401); 1 of 1 upstream call(s) failed; 8 more not sent after "
                                               "HTTP 401 (the proxy's journal has the detail, request ")


def test_a_refused_connection_is_named_without_the_transport_text(capsys):
    _, body, _ = gate_answer(lambda ctx: ctx.failures.append("ConnectError: [Errno 111] Connection refused"))
    assert body["error"]["message"].startswith("upstream error: no connection to the upstream")
    assert "Errno" not in body["error"]["message"] and "Errno 111" in capsys.readouterr().err


@hsettings(max_examples=100, deadline=None)
@given(before=st.text(max_size=500), after=st.text(max_size=100))
def test_the_bounded_upstream_message_never_holds_part_of_a_key(before, after):
    """The journal's copy is bounded; redact.py knows a key only whole, so the cut is between words."""
    from optillm_proxy_launcher.upstream import _error_message

    message = _error_message(json.dumps({"error": {"message": f"{before} {UPSTREAM_KEY} {after}"}}).encode())
    assert len(message) <= 410
    words = message.split()
    assert all(not UPSTREAM_KEY.startswith(w) or w == UPSTREAM_KEY for w in words if len(w) >= 12)
