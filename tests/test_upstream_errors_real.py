"""Upstream errors against real optillm 0.3.12 (lean runtime) started by the real launcher.

The recording upstream answers 401 quoting the Authorization header it received, as LiteLLM
1.80.11 does for a key it does not know. The client must read neither key nor the upstream's
words; the launcher's whole output (stdout and stderr: the journal's source under the unit) must
carry neither key; and each strategy makes exactly one upstream call.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.fixtures.runtime import UPSTREAM_KEY
from tests.test_request_path import KEY, chat, launch, post

pytestmark = pytest.mark.real

# Upstream calls on a 401 without the transport's stop: 1, 4, 4, 1, 1, 9 (majority_voting asks per sample).
MODELS = ["jerry-xl", "moa-jerry-xl", "bon-jerry-xl", "plansearch-jerry-xl", "self_consistency-jerry-xl",
          "majority_voting-jerry-xl"]
RECORD = re.compile(r"^optillm-proxy-record (\{.*\})$", re.M)


@pytest.fixture(scope="module")
def proxy(lean_runtime, upstream_session, tmp_path_factory):
    server = launch(lean_runtime, tmp_path_factory.mktemp("upstream-errors"), upstream_session.base_url,
                    PROXY_PLUGINS="majority_voting", PROXY_APPROACHES="moa,bon,plansearch,self_consistency,majority_voting")
    yield server
    server.stop()


def record_of(proxy, response: httpx.Response, seconds: float = 10.0) -> dict:
    """The request record of the answer (written once the server closed it: wait for it)."""
    request_id = re.search(r"request ([0-9a-f]+-[0-9a-f]+)\)", response.json()["error"]["message"]).group(1)
    end = time.monotonic() + seconds
    while True:
        found = [r for r in map(json.loads, RECORD.findall(proxy.log_text()))
                 if r["OPTILLM_PROXY_REQUEST_ID"] == request_id]
        if found:
            return found[0]
        assert time.monotonic() < end, f"no record for request {request_id}"
        time.sleep(0.05)


@pytest.mark.parametrize("model", MODELS)
def test_a_401_that_quotes_the_key_reaches_neither_the_client_nor_the_journal(proxy, upstream, model):
    upstream.fail_with(401, quote_authorization=True)
    r = post(proxy, chat(model))
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "upstream_key_refused" and error["type"] == "upstream_error"
    for leaked in (UPSTREAM_KEY, KEY, "Received API Key", "Key Hash", upstream.base_url, f":{upstream.port}",
                   "/etc/optillm-proxy", "upstream-key"):
        assert leaked not in r.text, (leaked, r.text)
    seen = upstream.calls()
    # One call, and it carried the key the upstream then quoted back.
    assert [c["authorization"] for c in seen] == [f"Bearer {UPSTREAM_KEY}"], (model, seen)
    record = record_of(proxy, r)
    assert record["OPTILLM_PROXY_MODEL"] == model and record["OPTILLM_PROXY_UPSTREAM_CALLS"] == "1"
    assert record["OPTILLM_PROXY_ERROR_CODE"] == "upstream_key_refused"
    print(f"\n{model}: {r.status_code} {r.text}  (upstream calls {len(seen)}, "
          f"not sent {record['OPTILLM_PROXY_UPSTREAM_SKIPPED']})")


def test_the_journal_has_the_upstreams_words_redacted_and_no_key_anywhere(proxy, upstream):
    upstream.fail_with(401, quote_authorization=True)
    # A client that writes the proxy key into its model name: the record must not carry it either.
    r = post(proxy, chat(f"moa-{KEY}"))
    assert r.status_code == 502
    record = record_of(proxy, r)
    metrics = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    log = proxy.log_text()
    assert UPSTREAM_KEY not in log and KEY not in log
    journal = [line for line in log.splitlines() if "upstream_key_refused (502 to the client)" in line]
    assert journal, log[-3000:]
    line = journal[-1]
    assert f"to {upstream.base_url} failed" in line and "Received API Key = Bearer [redacted upstream-key]" in line
    assert "LiteLLM refused the proxy's key in /etc/optillm-proxy/upstream-key" in line
    # optillm's own error lines went through the same stream.
    assert "[redacted upstream-key]" in log.replace(line, "")
    assert record["OPTILLM_PROXY_MODEL"] == "moa-[redacted proxy-key]"
    skipped = re.search(r'^optillm_proxy_upstream_skipped_total\{approach="moa"\} (\S+)', metrics, re.M)
    assert skipped and float(skipped.group(1)) >= 1, metrics
    print(f"\njournal line: {line}")


def test_other_non_transient_answers_are_not_repeated_either(proxy, upstream):
    for status, want, code in ((403, 502, "upstream_key_refused"), (400, 400, "upstream_rejected"),
                               (404, 400, "upstream_rejected")):
        upstream.reset()
        upstream.fail_with(status, quote_authorization=True)
        r = post(proxy, chat("self_consistency-jerry-xl"))
        assert (r.status_code, r.json()["error"]["code"]) == (want, code), r.text
        assert UPSTREAM_KEY not in r.text and len(upstream.calls()) == 1, (status, upstream.calls())
