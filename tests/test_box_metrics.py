"""Prometheus against the booted box: a real Prometheus on the host (free port, temp config and
storage from etc/prometheus/prometheus.example.yml and the shipped rules) scrapes the installed
proxy at 127.0.0.1:4020 (the box shares the host network), and its figures for `opsctl smoke --all`
equal what the recording upstream behind the real LiteLLM counted.

The proxy process is shared with the other box tests, so everything is a difference between just
before and just after the smoke run, read by PromQL at those two instants (`@`), each checked
against a direct scrape first. Tokens: LiteLLM 1.80.11 hands the upstream's `usage` to the proxy
unchanged (measured: n=1 gives 10/7, n=3 gives 10/21), so the proxy's token counters must equal
the recording upstream's own usage for the calls it received.
"""

from __future__ import annotations

import re
import time

import pytest

from ops.from_launcher.layout import BASE_MODEL, LISTEN_PORT, SERVICE, STRATEGY_PREFIXES
from tests.box import service
from tests.fixtures.box import record
from tests.test_prometheus import (COMPLETION_TOKENS_PER_CHOICE, FAN_OUT, JOB, PROMPT_TOKENS_PER_CALL, Prometheus,
                                   alert_expr, check_metrics, parse_metrics, scrape, start_prometheus, total)

pytestmark = pytest.mark.box

SOCKET = f"{SERVICE}.socket"
PROXY = f"http://127.0.0.1:{LISTEN_PORT}"
TARGET = f"127.0.0.1:{LISTEN_PORT}"
# The order `opsctl smoke --all` runs its models in (ops/probes/smoke.py): base, then the four prefixes.
SMOKE_ORDER = ("none", *STRATEGY_PREFIXES)
COUNTERS = ("optillm_proxy_requests_total", "optillm_proxy_upstream_calls_total",
            "optillm_proxy_upstream_tokens_total", "optillm_proxy_upstream_retries_total")


def delta(prometheus: Prometheus, expr: str, t0: float, t1: float) -> dict[str, float]:
    """`expr` (summed by approach) at t1 minus at t0, in one PromQL query; a series born in between
    counts from 0."""
    query = (f"sum by (approach) ({expr} @ {t1:.3f}) - (sum by (approach) ({expr} @ {t0:.3f})"
             f" or sum by (approach) ({expr} @ {t1:.3f}) * 0)")
    return {a: v for a, v in prometheus.query(query).items() if v}


def synced_instant(prometheus: Prometheus) -> float:
    """Scrape /metrics directly, wait until Prometheus holds the same counter values, and return an
    instant at which its latest samples are these."""
    prometheus.wait_synced(parse_metrics(scrape(PROXY)), *COUNTERS)
    return time.time()


def test_box_metrics_pass_promtool_and_the_runbook_says_which_series_exist(box):
    text = scrape(PROXY)
    check_metrics(text)
    samples = parse_metrics(text)
    assert total(samples, "optillm_proxy_requests_in_flight") == 0
    # prometheus_client's own process collector reads the boot time from /proc/stat, which the
    # unit's ProcSubset=pid hides (it then exports nothing); the launcher's takes it from the clock.
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
            "process_start_time_seconds"} <= names, sorted(n for n in names if n.startswith("process"))
    assert total(samples, "process_resident_memory_bytes") > 50e6  # a real optillm, not a stub
    started = total(samples, "process_start_time_seconds")
    assert abs(started - time.time()) < 86400, started  # a plausible epoch, from the right boot time


def test_a_real_prometheus_counts_smoke_all_as_the_upstream_saw_it(box, box_upstream, tmp_path):
    prometheus = start_prometheus(tmp_path, TARGET)
    try:
        target = prometheus.wait_up()
        assert target["labels"] == {"instance": TARGET, "job": JOB}, target["labels"]
        pid, restarts = service.main_pid(box), service.n_restarts(box)
        t0 = synced_instant(prometheus)
        box_upstream.reset()
        # One model at a time: the recorded upstream calls are split per model in smoke's order.
        result = box.run("opsctl smoke --all --concurrency 1")
        output = result.stdout + result.stderr
        assert result.rc == 0, output
        assert re.search(r"(\d+)/\1 passed", output), output
        calls = box_upstream.calls()
        t1 = synced_instant(prometheus)
        # One process served it all: the differences are the smoke run's.
        assert (service.main_pid(box), service.n_restarts(box)) == (pid, restarts)

        requests = delta(prometheus, 'optillm_proxy_requests_total{status="200"}', t0, t1)
        upstream_calls = delta(prometheus, "optillm_proxy_upstream_calls_total", t0, t1)
        assert {a: requests.get(a) for a in SMOKE_ORDER} == {a: 1.0 for a in SMOKE_ORDER}, requests
        assert delta(prometheus, 'optillm_proxy_requests_total{status!="200"}', t0, t1) == {}
        per_request = {a: upstream_calls.get(a, 0.0) / requests[a] for a in SMOKE_ORDER}
        record("smoke --all upstream calls per request (Prometheus)", per_request)
        assert per_request == {a: float(FAN_OUT[a]) for a in SMOKE_ORDER}, per_request
        assert delta(prometheus, "optillm_proxy_upstream_retries_total", t0, t1) == {}
        # ...and the same ratio computed by Prometheus in one expression.
        ratio = prometheus.query(
            f"(sum by (approach) (optillm_proxy_upstream_calls_total @ {t1:.3f})"
            f" - (sum by (approach) (optillm_proxy_upstream_calls_total @ {t0:.3f})"
            f" or sum by (approach) (optillm_proxy_upstream_calls_total @ {t1:.3f}) * 0))"
            f" / (sum by (approach) (optillm_proxy_requests_total @ {t1:.3f})"
            f" - (sum by (approach) (optillm_proxy_requests_total @ {t0:.3f})"
            f" or sum by (approach) (optillm_proxy_requests_total @ {t1:.3f}) * 0))")
        assert {a: ratio.get(a) for a in SMOKE_ORDER} == per_request, ratio

        # What reached the model: every call was for the base model, as many as the proxy counted.
        assert {c["model"] for c in calls} == {BASE_MODEL}
        assert len(calls) == sum(upstream_calls.values()), (len(calls), upstream_calls)
        prompt = delta(prometheus, 'optillm_proxy_upstream_tokens_total{kind="prompt"}', t0, t1)
        completion = delta(prometheus, 'optillm_proxy_upstream_tokens_total{kind="completion"}', t0, t1)
        assert sum(prompt.values()) == PROMPT_TOKENS_PER_CALL * len(calls), (prompt, len(calls))
        assert sum(completion.values()) == sum(COMPLETION_TOKENS_PER_CHOICE * int(c["n"] or 1) for c in calls), \
            (completion, [c["n"] for c in calls])
        # smoke runs its models one at a time, in SMOKE_ORDER: the recorded calls split into runs.
        start = 0
        for approach in SMOKE_ORDER:
            mine = calls[start:start + FAN_OUT[approach]]
            start += FAN_OUT[approach]
            assert prompt[approach] == PROMPT_TOKENS_PER_CALL * len(mine), approach
            assert completion[approach] == sum(COMPLETION_TOKENS_PER_CHOICE * int(c["n"] or 1) for c in mine), \
                (approach, [c["n"] for c in mine])
        record("smoke --all upstream tokens prompt/completion (Prometheus)",
               {a: f"{prompt[a]:g}/{completion[a]:g}" for a in SMOKE_ORDER})

        # The shipped rules evaluate cleanly against the real series.
        health = prometheus.rule_health()
        assert set(health) >= {"OptillmProxyDown", "OptillmProxyFanOutAboveExpectation"}, health
        assert all(h == ("ok", "") for h in health.values()), health
    finally:
        prometheus.stop()


def reset_start_limits(box) -> None:
    """This file stops and starts the units: other tests' starts must not push them over their limits."""
    box.check(f"systemctl reset-failed {SERVICE} {SOCKET}")


def wait_started_without_a_probe(box, old_pid: int, timeout: float = 120.0) -> float:
    """Seconds until systemd has the service active under a new PID, asking systemd only: polling
    /health would connect to the socket and start the service itself."""
    start = time.monotonic()
    for _ in range(int(timeout / 0.25) + 1):
        now = service.show(box, "ActiveState", "MainPID")
        if now["ActiveState"] == "active" and int(now["MainPID"]) not in (0, old_pid):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.25)
    raise AssertionError(f"{SERVICE} not started again within {timeout:g} s:\n{service.journal(box, 40)}")


def test_a_stopped_service_is_started_again_by_the_next_scrape(box, tmp_path):
    """optillm-proxy.socket holds 127.0.0.1:4020: after `systemctl stop optillm-proxy` alone the
    socket still listens, so Prometheus's next scrape starts the service again (socket activation)
    and OptillmProxyDown has nothing to see. Nothing else connects here meanwhile."""
    prometheus = start_prometheus(tmp_path, TARGET)
    try:
        prometheus.wait_up()
        reset_start_limits(box)
        old = service.main_pid(box)
        box.run(f"systemctl stop {SERVICE}", timeout=120).check()
        assert box.run(f"systemctl is-active {SOCKET}").stdout.strip() == "active"
        took = wait_started_without_a_probe(box, old)
        record("service stopped alone -> started again by a 1 s scrape s", round(took, 1))
        service.wait_healthy(box, not_pid=old)
        prometheus.wait_up()
    finally:
        prometheus.stop()


def test_up_goes_to_0_and_the_down_alert_selects_it_when_the_socket_is_stopped_too(box, tmp_path):
    """`up` for job optillm-proxy, which OptillmProxyDown reads, follows the real units."""
    prometheus = start_prometheus(tmp_path, TARGET)
    try:
        prometheus.wait_up()
        reset_start_limits(box)
        old = service.main_pid(box)
        box.run(f"systemctl stop {SOCKET} {SERVICE}", timeout=120).check()
        try:
            prometheus.wait_for("up == 0 with socket and service stopped",
                                lambda: prometheus.query(f'up{{job="{JOB}"}}') == {"": 0.0})
            assert prometheus.query(alert_expr("OptillmProxyDown")) == {"": 0.0}
            target = prometheus.target()
            assert target["health"] == "down" and "connection refused" in target["lastError"], target
        finally:
            box.run(f"systemctl start {SOCKET}", timeout=120).check()
        # Starting the socket is enough: the next scrape starts the service.
        prometheus.wait_up()
        service.wait_healthy(box, not_pid=old)
    finally:
        prometheus.stop()
