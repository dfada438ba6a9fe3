"""admission.py: the bound on requests and request bytes inside the app (fast tier, no server).

The same layer in front of real optillm under waitress: tests/test_serving.py; under a booted
systemd with 100 bodies of 3.9 MB: tests/test_box_server_load.py.
"""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from optillm_proxy_launcher import settings
from optillm_proxy_launcher.admission import REASONS, RETRY_AFTER_SECONDS, Admission


class Held:
    """A WSGI app whose answers stay open until released (the server has not closed them yet)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def call(app, method="POST", size=10, length=None):
    environ = {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(size) if length is None else length,
               "PATH_INFO": "/v1/chat/completions"}
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    result = app(environ, start_response)
    body = b"".join(result)
    return seen["status"], seen["headers"], body, result


def test_past_the_request_bound_a_503_with_retry_after_in_openai_shape_and_the_app_never_runs():
    inner = Held()
    refused = []
    app = Admission(inner, max_requests=2, max_bytes=10_000, on_refused=lambda env, why: refused.append(why))
    open_answers = [call(app)[3] for _ in range(2)]
    status, headers, body, _ = call(app)
    assert status.startswith("503") and headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    error = json.loads(body)["error"]
    assert error["code"] == "overloaded_busy" and "SERVER_THREADS" in error["message"]
    assert inner.calls == 2 and refused == ["busy"]
    open_answers[0].close()  # the server closed one answer: room again
    assert call(app)[0].startswith("200")


def test_past_the_byte_bound_a_503_but_one_request_alone_is_always_admitted():
    inner = Held()
    app = Admission(inner, max_requests=10, max_bytes=1000)
    first = call(app, size=900)[3]
    status, _, body, _ = call(app, size=200)
    assert status.startswith("503") and json.loads(body)["error"]["code"] == "overloaded_memory"
    first.close()
    assert call(app, size=5000)[0].startswith("200")  # alone: admitted (the gate bounds its size)


def test_bodyless_gets_are_not_counted_so_health_always_passes():
    app = Admission(Held(), max_requests=1, max_bytes=10)
    held = call(app)[3]
    assert call(app, "GET", length="")[0].startswith("200")
    assert call(app, "HEAD", length="0")[0].startswith("200")
    assert call(app, "GET", size=5)[0].startswith("503")  # a GET with a body is counted
    held.close()


def test_a_failing_hook_never_changes_the_answer(capsys):
    def hook(environ, reason):
        raise RuntimeError("metrics broke")

    app = Admission(Held(), max_requests=1, max_bytes=10, on_refused=hook)
    held = call(app)[3]
    assert call(app)[0].startswith("503") and call(app)[0].startswith("503")
    assert capsys.readouterr().err.count("admission hook failed: RuntimeError") == 1
    held.close()


def test_an_app_that_raises_releases_its_place():
    def broken(environ, start_response):
        raise ValueError("boom")

    app = Admission(broken, max_requests=1, max_bytes=10)
    with pytest.raises(ValueError):
        call(app)
    assert app.requests == 0 and app.bytes == 0


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["POST", "GET", "post", "PUT"]),
                          st.one_of(st.integers(0, 3000).map(str), st.sampled_from(["", "x", "-5"]))),
                min_size=1, max_size=40),
       st.integers(1, 8), st.integers(1, 4000))
def test_counts_never_exceed_the_bounds_and_return_to_zero(requests, max_requests, max_bytes):
    """Invariant: inside the app there are never more than max_requests counted requests, never
    more than max_bytes counted bytes (unless one request alone), and all is released at the end."""
    inner = Held()
    app = Admission(inner, max_requests=max_requests, max_bytes=max_bytes)
    held = []
    for method, length in requests:
        status, _, _, result = call(app, method, length=length)
        assert status[:3] in ("200", "503")
        assert app.requests <= max_requests
        assert app.bytes <= max_bytes or app.requests == 1
        held.append(result)
    for result in held:
        getattr(result, "close", lambda: None)()
    assert app.requests == 0 and app.bytes == 0


def test_concurrent_callers_are_counted_exactly():
    app = Admission(Held(), max_requests=5, max_bytes=10**9)
    results, lock = [], threading.Lock()

    def one():
        status, _, _, result = call(app)
        with lock:
            results.append((status, result))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.startswith("200") for s, _ in results) == 5
    for _, r in results:
        getattr(r, "close", lambda: None)()
    assert app.requests == 0


def test_reasons_are_documented_and_settings_keep_headroom_for_health():
    assert REASONS == ("busy", "memory")
    request = settings.request_settings({}, [], settings.plugin_table())
    assert request.admit_requests == request.threads - settings.RESERVED_THREADS > 0


def test_settings_refuse_an_admission_budget_below_the_largest_request():
    with pytest.raises(settings.ConfigRefused, match="ADMIT_BODY_BYTES=1024 is below MAX_REQUEST_BYTES"):
        settings.request_settings({"ADMIT_BODY_BYTES": "1024"}, [], settings.plugin_table())
    with pytest.raises(settings.ConfigRefused, match="CONNECTION_LIMIT=16 is below SERVER_THREADS=64"):
        settings.request_settings({"CONNECTION_LIMIT": "16"}, [], settings.plugin_table())
