"""Where `opsctl eval` takes upstream calls and tokens per task from.

The launcher counts, per approach, the requests it answered and the upstream (LiteLLM) calls and
tokens they made (launcher/optillm_proxy_launcher/metrics.py), and serves them at /metrics on the
proxy's own port without a key. Reading them before and after one model's run gives that model's
calls and tokens per request, prompt and completion, as the upstream reported them: "source: proxy
metrics". The counters are per approach, not per client: other traffic with the same approach during
the run is counted too, so the figures are per request averaged over all of them (the requests
counter of the same approach is the divisor, and the report says how many were not ours).

Without it (the URL is LiteLLM's and --metrics-url is not the proxy, or the base model, which
LiteLLM sends straight to the model server), each answer's own `usage` is used: "source: answer
usage". That source takes completion tokens only, and no call count: through the launcher a
strategy's usage is what it spent upstream, prompt included (docs/usage.md), but stock optillm's
(PROXY_USAGE=stock) has completion tokens only, and completion tokens compare across both.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

REQUESTS = "optillm_proxy_requests_total"
CALLS = "optillm_proxy_upstream_calls_total"
TOKENS = "optillm_proxy_upstream_tokens_total"
SOURCE_METRICS = "proxy metrics"
SOURCE_USAGE = "answer usage"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Counts:
    requests: float = 0.0
    calls: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0

    def minus(self, other: "Counts") -> "Counts":
        return Counts(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))


def parse(text: str) -> dict[str, Counts] | None:
    """Counts per approach from the Prometheus text exposition; None when it is not the proxy's."""
    requests: dict[str, float] = {}
    calls: dict[str, float] = {}
    prompt: dict[str, float] = {}
    completion: dict[str, float] = {}
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in (REQUESTS, CALLS, TOKENS):
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        approach = labels.get("approach")
        if approach is None:
            continue
        name = match.group(1)
        if name == CALLS:
            seen = True
            calls[approach] = calls.get(approach, 0.0) + value
        elif name == REQUESTS:
            requests[approach] = requests.get(approach, 0.0) + value
        elif labels.get("kind") == "prompt":
            prompt[approach] = prompt.get(approach, 0.0) + value
        elif labels.get("kind") == "completion":
            completion[approach] = completion.get(approach, 0.0) + value
    if not seen:
        return None
    names = set(requests) | set(calls) | set(prompt) | set(completion)
    return {a: Counts(requests.get(a, 0.0), calls.get(a, 0.0), prompt.get(a, 0.0), completion.get(a, 0.0))
            for a in names}


def snapshot(client, metrics_url: str | None) -> dict[str, Counts] | None:
    """The proxy's counters now, or None when metrics_url does not serve them (never raises)."""
    if not metrics_url:
        return None
    try:
        response = client.get(f"{metrics_url}/metrics", headers={"Accept": "text/plain"})
    except Exception:  # unreachable, timeout, anything: fall back to the answers' usage
        return None
    if response.status_code != 200:
        return None
    return parse(response.text)
