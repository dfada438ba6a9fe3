"""The real chain: client -> LiteLLM -> optillm 0.3.12 -> LiteLLM -> model (the recording upstream).

Everything is real except the model: LiteLLM from locks/litellm.txt with the shipped config
(etc/litellm/config.example.yaml, rendered for free ports), optillm from the full lock, started as
the unit starts it (our launcher, the proxy key as a credential). optillm's upstream is LiteLLM's
/v1 and it presents LiteLLM's master key (its upstream-key credential); LiteLLM presents the proxy key to
optillm and the model's own key to the model.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ops.from_launcher.layout import BASE_MODEL
from tests.fixtures.litellm import (
    DEFAULT_MASTER_KEY,
    DEFAULT_PROXY_KEY,
    DEFAULT_UPSTREAM_KEY,
    start_litellm,
)
from tests.fixtures.runtime import free_port, launcher_credentials, start_optillm
from tests.probe_helpers import opsctl_bin

pytestmark = pytest.mark.chain

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "What is 6*7?"}]

# Upstream calls per request in 0.3.12's auto mode (server started without --approach), as
# measured against optillm alone (docs/optillm-0.3.12.md and test_runtime_smoke_fixture):
# the chain must add none and lose none.
FAN_OUT = {
    BASE_MODEL: 1,
    f"moa-{BASE_MODEL}": 3,
    f"bon-{BASE_MODEL}": 4,
    f"plansearch-{BASE_MODEL}": 4,
    f"self_consistency-{BASE_MODEL}": 5,
}


class Chain:
    def __init__(self, upstream, litellm, optillm) -> None:
        self.upstream, self.litellm, self.optillm = upstream, litellm, optillm

    def ask(self, model: str, messages=PROMPT):
        import httpx

        return httpx.post(f"{self.litellm.base_url}/chat/completions",
                          headers={"Authorization": f"Bearer {DEFAULT_MASTER_KEY}"},
                          json={"model": model, "messages": messages, "max_tokens": 50}, timeout=300)


@pytest.fixture(scope="module")
def chain(full_runtime, litellm_venv, upstream_session, tmp_path_factory):
    """One chain for the module: optillm first (its /health needs no upstream), then LiteLLM on the
    port optillm was told to use."""
    litellm_port = free_port()
    litellm_url = f"http://127.0.0.1:{litellm_port}/v1"
    workdir = tmp_path_factory.mktemp("chain-optillm")
    # optillm presents LiteLLM's master key: its upstream-key credential.
    credentials = launcher_credentials(workdir / "credentials", DEFAULT_PROXY_KEY, DEFAULT_MASTER_KEY)
    argv = [str(full_runtime / "bin" / "python"), "-I", str(REPO / "launcher" / "optillm-proxy-launcher.py"),
            "--host", "127.0.0.1", "--port", "{port}", "--base-url", litellm_url, "--model", BASE_MODEL]
    optillm = start_optillm(full_runtime, workdir, litellm_url, argv=argv, key=DEFAULT_PROXY_KEY,
                            env_extra={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        litellm = start_litellm(litellm_port, upstream_session.base_url, f"{optillm.url}/v1",
                                venv=litellm_venv, workdir=tmp_path_factory.mktemp("chain-litellm"))
    except BaseException:
        optillm.stop()
        raise
    print(f"\nLiteLLM start to ready: {litellm.ready_seconds[0]:.1f} s (measured, not asserted)")
    yield Chain(upstream_session, litellm, optillm)
    litellm.stop()
    optillm.stop()


@pytest.mark.parametrize("model", list(FAN_OUT))
def test_each_model_fans_out_at_the_model_for_the_base_name_only(chain, model):
    chain.upstream.reset()
    r = chain.ask(model)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]

    calls = chain.upstream.calls()
    assert len(calls) == FAN_OUT[model], calls
    # Loop avoidance, end to end: whatever the client asked for, the model only sees the base name.
    assert {c["model"] for c in chain.upstream.calls("")} == {BASE_MODEL}
    # The model gets its own key: never the proxy key (LiteLLM -> optillm) nor LiteLLM's master key
    # (optillm -> LiteLLM), which would mean a key leaked one hop too far.
    assert {c["authorization"] for c in calls} == {f"Bearer {DEFAULT_UPSTREAM_KEY}"}
    if model.startswith(("moa-", "bon-")):
        assert calls[0]["n"] == 3  # both strategies open with one n=3 completion


def test_prefixed_models_reach_the_proxy_through_litellm(chain):
    """The fan-out above could only come from optillm; its own request record shows LiteLLM's request
    arrived with the proxy key and ran the strategy (a wrong key would have been answered 401)."""
    chain.upstream.reset()
    assert chain.ask(f"moa-{BASE_MODEL}").status_code == 200
    log = chain.optillm.log_text()
    records = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines()
               if line.startswith("optillm-proxy-record ")]
    assert any((r["OPTILLM_PROXY_PATH"], r["OPTILLM_PROXY_STATUS"], r["OPTILLM_PROXY_APPROACH"])
               == ("/v1/chat/completions", "200", "moa") for r in records), log[-3000:]
    assert " 401 " not in log, log[-3000:]


def test_litellm_log_holds_no_key_and_nothing_left_the_machine(chain):
    """Run after the requests above (same module chain; the refused request below comes after it,
    since LiteLLM logs a refusal with a traceback). Any outbound call LiteLLM tried would go to
    the closed port its proxy variables point at and be logged as a failed connection."""
    log = chain.litellm.log_text()
    assert "Application startup complete" in log, log[-3000:]
    leaked = [k for k in (DEFAULT_MASTER_KEY, DEFAULT_PROXY_KEY, DEFAULT_UPSTREAM_KEY) if k in log]
    assert leaked == [], "LiteLLM logged a key"
    assert "127.0.0.1:9" not in log and "Traceback" not in log, log[-3000:]


def test_a_litellm_client_that_picks_the_approach_in_band_is_told_why(chain):
    """LiteLLM passes message text through untouched: stock 0.3.12 ran cepo (48 upstream calls)
    for this `moa-` request. The proxy refuses it, and LiteLLM's client reads the rule."""
    chain.upstream.reset()
    tagged = [{"role": "system", "content": "<optillm_approach>cepo</optillm_approach>"}, *PROMPT]
    r = chain.ask(f"moa-{BASE_MODEL}", tagged)
    assert r.status_code == 400, r.text
    assert "refused by optillm-proxy policy (approach-tag)" in r.text and "remove the tag" in r.text, r.text
    assert chain.upstream.calls() == []
    # LiteLLM logs the refused call with a traceback of its own; keys stay out of its log.
    log = chain.litellm.log_text()
    assert [k for k in (DEFAULT_MASTER_KEY, DEFAULT_PROXY_KEY, DEFAULT_UPSTREAM_KEY) if k in log] == []
    print(f"\nwhat LiteLLM's client reads: {r.text[:400]}")




def wait_until_litellm_serves_the_model_again(chain, seconds: float = 60.0) -> None:
    """LiteLLM's router cools a deployment down after a 401 (seconds): the tests after this one
    need it back."""
    import time

    end = time.monotonic() + seconds
    while True:
        if chain.ask(BASE_MODEL).status_code == 200:
            chain.upstream.reset()
            return
        if time.monotonic() > end:
            raise AssertionError(f"LiteLLM did not serve {BASE_MODEL} again within {seconds:g} s")
        time.sleep(1)


def test_an_upstream_401_quoting_the_key_never_reaches_litellms_client(chain):
    """The model behind LiteLLM answers 401 quoting the Authorization header it received, as
    LiteLLM's own 401 does for a key it does not know (this test LiteLLM has no database, so it
    answers a wrong key with `No connected db.` instead). LiteLLM relays the model's text to the
    proxy; the proxy's client, LiteLLM, and so LiteLLM's end user, read the proxy's fixed reason;
    neither key is in the body or in the proxy's output, and moa makes one upstream call."""
    chain.upstream.reset()
    chain.upstream.fail_with(401, quote_authorization=True)
    try:
        r = chain.ask(f"moa-{BASE_MODEL}")
        calls = chain.upstream.calls()
    finally:
        chain.upstream.reset()
        wait_until_litellm_serves_the_model_again(chain)
    print(f"\nwhat LiteLLM's client reads: {r.status_code} {r.text[:600]}")
    assert r.status_code >= 400
    for leaked in (DEFAULT_UPSTREAM_KEY, DEFAULT_MASTER_KEY, DEFAULT_PROXY_KEY, "Received API Key", "Key Hash",
                   chain.litellm.base_url, "/etc/optillm-proxy"):
        assert leaked not in r.text, leaked
    assert "upstream_key_refused" in r.text or "refused this proxy's credentials" in r.text, r.text
    log = chain.optillm.log_text()
    assert not [k for k in (DEFAULT_UPSTREAM_KEY, DEFAULT_MASTER_KEY, DEFAULT_PROXY_KEY) if k in log]
    journal = [line for line in log.splitlines() if "upstream_key_refused (502 to the client)" in line]
    # LiteLLM relayed the model's text, the model's key quoted in it; the proxy's journal has it redacted.
    assert journal and "Received API Key = Bearer [redacted]" in journal[-1], log[-3000:]
    # One upstream call per try (LiteLLM may try the proxy more than once: its own retries).
    assert all(": 1 of 1 upstream call(s)" in line for line in journal), journal
    assert len(calls) == len(journal), (calls, journal)
    print(f"journal line: {journal[-1]}\nupstream calls: {len(calls)}, tries of the proxy by LiteLLM: {len(journal)}")


def test_opsctl_smoke_all_passes_against_the_proxy(chain, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("OPENAI_API_KEY=unused-here\nPROXY_PLUGINS=none\n")
    env_file.chmod(0o600)
    # The key reaches opsctl through its environment, never its command line.
    env = dict(os.environ, OPSCTL_API_KEY=DEFAULT_PROXY_KEY)
    chain.upstream.reset()
    proc = subprocess.run([opsctl_bin(), "smoke", "--all", "--url", chain.optillm.url, "--env-file", str(env_file)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for model in FAN_OUT:
        assert model in proc.stdout
    assert {c["model"] for c in chain.upstream.calls()} == {BASE_MODEL}
    assert len(chain.upstream.calls()) == sum(FAN_OUT.values())
