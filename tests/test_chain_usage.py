"""Through the real LiteLLM: a strategy's usage is what its caller's key is charged, and it is right.

client -> LiteLLM (locks/litellm.txt, the shipped config) -> the launcher with optillm 0.3.12 (lean
runtime) -> LiteLLM -> the recording upstream. LiteLLM runs with no database, as in the chain
tests, plus what this test needs on top of the shipped config: a price on every route (LiteLLM's
documented `input_cost_per_token`/`output_cost_per_token`, so a response has a cost) and a
logging callback that writes, per request, LiteLLM's own StandardLoggingPayload: the tokens and
`response_cost` it charges to the caller's key, the payload LiteLLM's spend logs are built from.
(Its Prometheus metrics need prometheus_client, which locks/litellm.txt does not hold.)

For each routed strategy: the usage LiteLLM's client reads equals the recording upstream's own
count summed over the calls the request caused; LiteLLM charges exactly that (tokens, and the cost
from them, also in its x-litellm-response-cost header); and it equals what LiteLLM itself logged
for the inner base-model calls. Streams with include_usage likewise. With PROXY_USAGE=stock the
same chain shows the undercount this fixes (printed: stock vs now).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from ops.from_launcher.layout import BASE_MODEL, STRATEGY_PREFIXES
from tests.fixtures.litellm import DEFAULT_MASTER_KEY, DEFAULT_PROXY_KEY, start_litellm
from tests.fixtures.runtime import REPO, free_port, launcher_credentials, start_optillm

pytestmark = pytest.mark.chain

LAUNCHER = REPO / "launcher" / "optillm-proxy-launcher.py"
STRATEGIES = [f"{p}-{BASE_MODEL}" for p in STRATEGY_PREFIXES]
PROMPT = [{"role": "user", "content": "What is 6*7?"}]
INPUT_PRICE, OUTPUT_PRICE = 1e-6, 2e-6  # USD per token, the same on every route
SPEND_LOG = "spend.jsonl"
# A LiteLLM custom logger (its documented `callbacks: <module>.<instance>` form, the module beside
# the config): one JSON line per successful request with what LiteLLM charges for it.
CALLBACK = '''
import json
from pathlib import Path

from litellm.integrations.custom_logger import CustomLogger

LOG = Path(__file__).with_name("%s")


class SpendLog(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        p = kwargs.get("standard_logging_object") or {}
        entry = {k: p.get(k) for k in ("model_group", "prompt_tokens", "completion_tokens", "total_tokens",
                                       "response_cost", "stream")}
        with LOG.open("a") as out:
            out.write(json.dumps(entry) + "\\n")


handler = SpendLog()
''' % SPEND_LOG


def priced_and_logged(config: dict) -> None:
    for entry in config["model_list"]:
        entry["litellm_params"].update(input_cost_per_token=INPUT_PRICE, output_cost_per_token=OUTPUT_PRICE)
    config["litellm_settings"]["callbacks"] = ["spend_log.handler"]


class Chain:
    def __init__(self, upstream, litellm, optillm, workdir: Path) -> None:
        self.upstream, self.litellm, self.optillm = upstream, litellm, optillm
        self.spend_path = workdir / SPEND_LOG

    def ask(self, model: str, **extra) -> httpx.Response:
        return httpx.post(f"{self.litellm.base_url}/chat/completions",
                          headers={"Authorization": f"Bearer {DEFAULT_MASTER_KEY}"},
                          json={"model": model, "messages": PROMPT, "max_tokens": 50, **extra}, timeout=300)

    def spend(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.spend_path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def logged(self, start: int, want: int, timeout: float = 15.0) -> list[dict]:
        """LiteLLM's entries after the first `start`, once `want` of them are there (it logs after
        answering)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            entries = self.spend()[start:]
            if len(entries) >= want:
                return entries
            time.sleep(0.1)
        raise AssertionError(f"LiteLLM logged {self.spend()[start:]}, wanted {want} entries")


def make_chain(lean_runtime, litellm_venv, upstream, tmp_path_factory, **launcher_env) -> Chain:
    litellm_port = free_port()
    litellm_url = f"http://127.0.0.1:{litellm_port}/v1"
    workdir = tmp_path_factory.mktemp("usage-chain-optillm")
    credentials = launcher_credentials(workdir / "credentials", DEFAULT_PROXY_KEY, DEFAULT_MASTER_KEY)
    argv = [str(lean_runtime / "bin" / "python"), "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port", "{port}",
            "--base-url", litellm_url, "--model", BASE_MODEL]
    optillm = start_optillm(lean_runtime, workdir, litellm_url, argv=argv, key=DEFAULT_PROXY_KEY,
                            env_extra={"CREDENTIALS_DIRECTORY": str(credentials), **launcher_env})
    litellm_dir = tmp_path_factory.mktemp("usage-chain-litellm")
    (litellm_dir / "spend_log.py").write_text(CALLBACK)
    try:
        litellm = start_litellm(litellm_port, upstream.base_url, f"{optillm.url}/v1", venv=litellm_venv,
                                workdir=litellm_dir, adjust=priced_and_logged)
    except BaseException:
        optillm.stop()
        raise
    return Chain(upstream, litellm, optillm, litellm_dir)


@pytest.fixture(scope="module")
def chain(lean_runtime, litellm_venv, upstream_session, tmp_path_factory):
    handle = make_chain(lean_runtime, litellm_venv, upstream_session, tmp_path_factory)
    yield handle
    handle.litellm.stop()
    handle.optillm.stop()


def plain(usage: dict) -> dict:
    return {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def cost(usage: dict) -> float:
    return usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE


@pytest.mark.parametrize("model", STRATEGIES)
def test_litellm_client_and_litellm_spend_see_what_the_strategy_spent(chain, model):
    chain.upstream.reset()
    start = len(chain.spend())
    r = chain.ask(model)
    assert r.status_code == 200, r.text
    calls = chain.upstream.calls()
    want = chain.upstream.usage()  # the model server's own count, summed over the request's calls
    answer = r.json()
    assert plain(answer["usage"]) == want, (answer["usage"], calls)
    assert all("stream_options" not in c["fields"] for c in calls)
    # LiteLLM hands optillm's own figure on to its client too (docs/usage.md says so).
    assert "completion_tokens" in answer["usage"]["optillm_reported"], answer["usage"]

    entries = chain.logged(start, len(calls) + 1)
    outer = [e for e in entries if e["model_group"] == model]
    inner = [e for e in entries if e["model_group"] == BASE_MODEL]
    assert len(outer) == 1 and len(inner) == len(calls), entries
    [charged] = outer
    # What LiteLLM charges the caller for the strategy request: the tokens and the cost from them.
    assert plain(charged) == want, charged
    assert charged["response_cost"] == pytest.approx(cost(want)), charged
    assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(cost(want)), dict(r.headers)
    # ... which is what LiteLLM itself logged for the base-model calls optillm made through it.
    assert {k: sum(e[k] for e in inner) for k in want} == want, inner
    print(f"\n{model}: upstream {len(calls)} calls {want}; LiteLLM client usage {plain(answer['usage'])}; "
          f"LiteLLM charged {plain(charged)} cost {charged['response_cost']:.6f}; "
          f"optillm_reported {answer['usage'].get('optillm_reported')}")


@pytest.mark.parametrize("model", [f"moa-{BASE_MODEL}", f"self_consistency-{BASE_MODEL}"])
def test_a_streamed_strategy_with_include_usage_is_charged_what_it_spent(chain, model):
    chain.upstream.reset()
    start = len(chain.spend())
    r = chain.ask(model, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200, r.text
    events = [e[len("data: "):] for e in r.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]", events
    chunks = [json.loads(e) for e in events[:-1]]
    usages = [c["usage"] for c in chunks if c.get("usage")]
    want = chain.upstream.usage()
    assert usages and plain(usages[-1]) == want, chunks
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    calls = chain.upstream.calls()
    [charged] = [e for e in chain.logged(start, len(calls) + 1) if e["model_group"] == model]
    assert plain(charged) == want and charged["response_cost"] == pytest.approx(cost(want)), charged
    print(f"\nstreamed {model}: upstream {want}; LiteLLM client's last chunk {usages[-1]}; charged {plain(charged)}")


def test_a_streamed_strategy_is_charged_what_it_spent_even_when_the_client_asks_no_usage(chain):
    """The shipped config's strategy routes ask for include_usage themselves: without it LiteLLM
    counts the streamed text with its own tokenizer (measured: 14 prompt, 6 completion tokens for a
    moa request that spent 30 and 35)."""
    model = f"moa-{BASE_MODEL}"
    chain.upstream.reset()
    start = len(chain.spend())
    r = chain.ask(model, stream=True)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text
    want = chain.upstream.usage()
    [charged] = [e for e in chain.logged(start, len(chain.upstream.calls()) + 1) if e["model_group"] == model]
    assert plain(charged) == want, charged
    # The option never goes further than the proxy.
    assert all("stream_options" not in c["fields"] for c in chain.upstream.calls())


def test_stock_usage_is_what_litellm_undercounted(lean_runtime, litellm_venv, upstream_session, tmp_path_factory):
    """PROXY_USAGE=stock: the same chain, optillm's own figure. LiteLLM charges completion tokens
    only (for moa, the final answer's share), no prompt: the undercount the default fixes."""
    stock = make_chain(lean_runtime, litellm_venv, upstream_session, tmp_path_factory, PROXY_USAGE="stock")
    try:
        for model in STRATEGIES:
            upstream_session.reset()
            start = len(stock.spend())
            r = stock.ask(model)
            assert r.status_code == 200, r.text
            want = upstream_session.usage()
            [charged] = [e for e in stock.logged(start, len(upstream_session.calls()) + 1)
                         if e["model_group"] == model]
            assert charged["prompt_tokens"] == 0 and charged["total_tokens"] < want["total_tokens"], (charged, want)
            print(f"\nstock {model}: upstream {want}; LiteLLM client usage {plain(r.json()['usage'])}; "
                  f"LiteLLM charged {plain(charged)} cost {charged['response_cost']:.6f} "
                  f"(true cost {cost(want):.6f})")
    finally:
        stock.litellm.stop()
        stock.optillm.stop()
