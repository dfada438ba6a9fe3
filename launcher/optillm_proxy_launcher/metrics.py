"""Prometheus metrics of the request path, served at /metrics on the proxy's own loopback port.

/metrics needs no key, like /health: the port is loopback-only (IPAddressAllow=localhost), the
figures carry no content and no secret, and a scraper holding the proxy key would spread a
credential that can spend LiteLLM budget. The process collector comes along (CPU, memory, open
files, start time): the unit's ProcSubset=pid hides /proc/stat, where prometheus_client reads the
boot time, so ours takes it from CLOCK_BOOTTIME instead (else it exports nothing, silently).
Every allowed approach's series exist from the start at 0, so rate()/increase() see the first
event after a restart.
"""

from __future__ import annotations

import time

from prometheus_client import (PROCESS_COLLECTOR, REGISTRY, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics, make_wsgi_app)


class SandboxedProcessCollector(ProcessCollector):
    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

from optillm_proxy_launcher.records import Record

# Strategy requests take seconds to minutes; the deadline bounds them (REQUEST_DEADLINE_SECONDS).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry=REGISTRY, approaches=()) -> None:
        # `*_created` series double every counter's output and no alert or report reads them.
        disable_created_metrics()
        if registry is REGISTRY:
            REGISTRY.unregister(PROCESS_COLLECTOR)
            SandboxedProcessCollector(registry=registry)
        self.registry = registry
        self.requests = Counter("optillm_proxy_requests", "Client requests answered, by approach and HTTP status.",
                                ["approach", "status"], registry=registry)
        self.duration = Histogram("optillm_proxy_request_duration_seconds",
                                  "Time from request to the end of the answer, by approach.", ["approach"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.upstream_calls = Counter("optillm_proxy_upstream_calls", "Upstream (LiteLLM) calls answered, "
                                      "by the approach of the request that made them.", ["approach"],
                                      registry=registry)
        self.upstream_tokens = Counter("optillm_proxy_upstream_tokens", "Tokens the upstream reported in its "
                                       "own usage, by approach and kind (prompt or completion).",
                                       ["approach", "kind"], registry=registry)
        self.upstream_errors = Counter("optillm_proxy_upstream_errors", "Upstream calls that failed "
                                       "(refused connection, HTTP error, timeout), by approach.", ["approach"],
                                       registry=registry)
        self.upstream_retries = Counter("optillm_proxy_upstream_retries", "Upstream calls retried, by approach.",
                                        ["approach"], registry=registry)
        self.upstream_skipped = Counter("optillm_proxy_upstream_skipped", "Upstream calls not sent because an "
                                        "earlier call of the same request was refused (401, 403) or rejected "
                                        "(400, 404, 422), by approach.", ["approach"], registry=registry)
        self.upstream_timeouts = Counter("optillm_proxy_upstream_timeouts", "Requests in which an upstream call "
                                         "hit UPSTREAM_TIMEOUT_SECONDS or the deadline, by approach.",
                                         ["approach"], registry=registry)
        self.deadline_exceeded = Counter("optillm_proxy_deadline_exceeded", "Requests cut at "
                                         "REQUEST_DEADLINE_SECONDS (answered 504), by approach.", ["approach"],
                                         registry=registry)
        self.refusals = Counter("optillm_proxy_policy_refusals", "Requests refused by the request policy, "
                                "by rule.", ["rule"], registry=registry)
        self.in_flight = Gauge("optillm_proxy_requests_in_flight", "Client requests being served now.",
                               registry=registry)
        self.app = make_wsgi_app(registry)
        for approach in ("none", *approaches):
            self.duration.labels(approach)
            for counter in (self.upstream_calls, self.upstream_errors, self.upstream_retries, self.upstream_skipped,
                            self.upstream_timeouts, self.deadline_exceeded):
                counter.labels(approach)
            for kind in ("prompt", "completion"):
                self.upstream_tokens.labels(approach, kind)

    def observe(self, record: Record) -> None:
        approach = record.approach
        self.requests.labels(approach, str(record.status)).inc()
        self.duration.labels(approach).observe(record.duration_ms / 1000)
        if record.upstream_calls:
            self.upstream_calls.labels(approach).inc(record.upstream_calls)
        self.upstream_tokens.labels(approach, "prompt").inc(record.upstream_prompt_tokens)
        self.upstream_tokens.labels(approach, "completion").inc(record.upstream_completion_tokens)
        if record.upstream_errors:
            self.upstream_errors.labels(approach).inc(record.upstream_errors)
        if record.upstream_retries:
            self.upstream_retries.labels(approach).inc(record.upstream_retries)
        if record.upstream_skipped:
            self.upstream_skipped.labels(approach).inc(record.upstream_skipped)
        if record.upstream_timeout or record.deadline_hit:
            self.upstream_timeouts.labels(approach).inc()
        if record.deadline_hit:
            self.deadline_exceeded.labels(approach).inc()
        if record.policy_rule:
            self.refusals.labels(record.policy_rule).inc()
