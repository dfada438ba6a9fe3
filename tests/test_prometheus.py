"""Prometheus wiring, for real: the shipped rules pass `promtool check rules` and their unit tests
(tests/prometheus/*.yml), and a real launcher's /metrics, scraped by a real Prometheus running the
shipped example config and rules, counts what the recording upstream saw.

Needs Debian's `prometheus` package (prometheus and promtool in /usr/bin; scripts/test.sh installs
it): missing, the tests fail and say so. Each Prometheus here is started on a free loopback port
with its own config and storage under a temp dir, and stopped at the end; the host's own
prometheus.service (if any) is never used. The box's version is tests/test_box_metrics.py.
"""

from __future__ import annotations

import io
import json
import math
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tools import fake_upstream
from tests.fixtures.runtime import REPO, free_port
from tests.fixtures.upstream import Upstream
from tests.test_request_path import KEY, chat, launch, post
from tests.prerequisites import require_tool

pytestmark = pytest.mark.real

RULES = REPO / "etc" / "prometheus" / "optillm-proxy.rules.yml"
EXAMPLE = REPO / "etc" / "prometheus" / "prometheus.example.yml"
MONITORING = REPO / "docs" / "monitoring.md"
RULE_TESTS = sorted((REPO / "tests" / "prometheus").glob("*.yml"))
JOB = "optillm-proxy"
INSTALLED_RULES = "/etc/prometheus/rules/optillm-proxy.rules.yml"
EXAMPLE_TARGET = "127.0.0.1:4020"
ALERTS = ("OptillmProxyDown", "OptillmProxyErrorRatio", "OptillmProxyLatencyP95", "OptillmProxyUpstreamTimeouts",
          "OptillmProxyFanOutAboveExpectation")
# Upstream calls per request optillm 0.3.12 makes (bench/README.md); the rules file has the same.
FAN_OUT = {"none": 1, "moa": 3, "bon": 4, "plansearch": 4, "self_consistency": 5}
# The recording upstream's usage (tools/fake_upstream.py): per call, prompt 10, completion 7 per choice.
PROMPT_TOKENS_PER_CALL = 10
COMPLETION_TOKENS_PER_CHOICE = 7
WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


def tool(name: str) -> str:
    return require_tool(name, "prometheus")  # Debian's package brings prometheus and promtool


def promtool(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)


# -- /metrics as text ------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples of the text exposition format: {(name, frozenset(labels.items())): value}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


def check_metrics(text: str) -> None:
    """`promtool check metrics` finds nothing to say about a live scrape."""
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


# -- a real Prometheus -----------------------------------------------------------------------------

def render_config(target: str, rules: Path = RULES, interval: str = "1s") -> str:
    """etc/prometheus/prometheus.example.yml with the target, intervals and rules path of a test.

    Matched by job name and by what the example says, so the shipped file stays the one truth and a
    changed example fails here instead of being silently replaced."""
    config = yaml.safe_load(EXAMPLE.read_text())
    assert config.get("rule_files") == [INSTALLED_RULES], config.get("rule_files")
    jobs = [job for job in config.get("scrape_configs") or [] if job.get("job_name") == JOB]
    assert len(jobs) == 1, f"{EXAMPLE}: want one scrape config with job_name {JOB}"
    assert jobs[0]["static_configs"] == [{"targets": [EXAMPLE_TARGET]}], jobs[0]
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"
    jobs[0]["static_configs"] = [{"targets": [target]}]
    config["rule_files"] = [str(rules)]
    config.setdefault("global", {}).update(scrape_interval=interval, evaluation_interval=interval)
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Prometheus:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params) -> object:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body.get("status") == "success", (path, params, response.text[:1000])
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query; {approach label or "": value} (the tests group by approach at most)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {r["metric"].get("approach", ""): float(r["value"][1]) for r in data["result"]}

    def wait_for(self, what: str, probe, timeout: float = WAIT_SECONDS):
        """Poll `probe()` until it returns something truthy; bounded in time and in count."""
        deadline = time.monotonic() + timeout
        last = None
        for _ in range(int(timeout / POLL_SECONDS) + 1):
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                last = probe()
            except (httpx.HTTPError, AssertionError, KeyError, ValueError) as exc:
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"prometheus: {what} not seen within {timeout:g} s (last: {last!r})\n"
                             f"{self.log_text()[-3000:]}")

    def wait_selects(self, expr: str, approaches: set[str]) -> dict[str, float]:
        """Until the instant query `expr` returns exactly these approaches; returns the result."""
        def selects():
            got = self.query(expr)
            return got if set(got) == approaches else None
        return self.wait_for(f"{expr} for {sorted(approaches)}", selects)

    def target(self) -> dict:
        active = self.api("targets")["activeTargets"]
        assert len(active) == 1, active
        return active[0]

    def wait_up(self) -> dict:
        """Until the scrape target is healthy and `up` says 1; returns the target."""
        self.wait_for("target health up", lambda: self.target()["health"] == "up")
        self.wait_for("up == 1", lambda: self.query(f'up{{job="{JOB}"}}') == {"": 1.0})
        return self.target()

    def wait_synced(self, truth: dict, *names: str) -> None:
        """Until Prometheus's latest samples of `names` (summed by approach) equal a direct scrape."""
        def synced():
            for name in names:
                want = by_approach(truth, name)
                got = self.query(f"sum by (approach) ({name})")
                if got != want:
                    raise AssertionError(f"{name}: prometheus {got}, /metrics {want}")
            return True
        self.wait_for(f"{', '.join(names)} as /metrics shows them", synced)

    def rule_health(self) -> dict[str, tuple[str, str]]:
        """{rule name: (health, last error)}, once every rule has been evaluated at least once."""
        def evaluated():
            health = {rule.get("name"): (rule.get("health"), rule.get("lastError", ""))
                      for group in self.api("rules")["groups"] for rule in group["rules"]}
            return health if health and all(h != "unknown" for h, _ in health.values()) else None
        return self.wait_for("every rule evaluated", evaluated)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_prometheus(tmp: Path, target: str) -> Prometheus:
    """A real Prometheus on a free loopback port, scraping `target` every second with the shipped
    rules, its config and storage under `tmp`; ready when /-/ready answers. Stop it in a finally."""
    binary = tool("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(render_config(target))
    check = promtool("check", "config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    storage = tmp / "data"
    storage.mkdir()
    port = free_port()
    log_path = tmp / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={storage}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                                cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    prometheus = Prometheus(proc, port, log_path)
    try:
        prometheus.wait_for("/-/ready", lambda: httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200)
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


def by_approach(samples: dict, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), value in samples.items():
        if n == name:
            approach = dict(labels).get("approach", "")
            out[approach] = out.get(approach, 0.0) + value
    return out


# -- the rules -------------------------------------------------------------------------------------

def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_promtool_rule_unit_tests_pass():
    assert RULE_TESTS, "no rule unit tests in tests/prometheus/"
    result = promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_severity_a_for_a_runbook_entry_and_a_firing_and_a_quiet_unit_test():
    """Where each runbook_url points is tests/test_runbook.py's (fast tier); here: the entry exists."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert tuple(alerts) == ALERTS
    runbook = (REPO / "RUNBOOK.md").read_text()
    unit_tests = [yaml.safe_load(p.read_text()) for p in RULE_TESTS]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule.get("for"), f"{name} has no `for:`"
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert f"\n## Paged: {name}\n" in runbook, f"RUNBOOK.md has no entry `## Paged: {name}`"
        assert f"| `{name}` |" in MONITORING.read_text(), f"docs/monitoring.md's alert table has no row for {name}"
        checks = [c for doc in unit_tests for t in doc["tests"] for c in t.get("alert_rule_test", [])
                  if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in checks), f"no unit test where {name} fires"
        assert any(not c.get("exp_alerts") for c in checks), f"no unit test where {name} stays quiet"


def test_monitoring_doc_shows_the_example_scrape_config():
    text = MONITORING.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert EXAMPLE.read_text() in blocks, "docs/monitoring.md's scrape config differs from etc/prometheus/prometheus.example.yml"
    assert INSTALLED_RULES in text


# -- the real launcher, scraped --------------------------------------------------------------------

@pytest.fixture(scope="module")
def metrics_proxy(lean_runtime, upstream_session, tmp_path_factory):
    server = launch(lean_runtime, tmp_path_factory.mktemp("prometheus-proxy"), upstream_session.base_url)
    yield server
    server.stop()


@dataclass
class Sent:
    requests: dict[str, int]  # approach -> requests answered 200
    calls: dict[str, int]  # approach -> calls the recording upstream got
    prompt: dict[str, int]
    completion: dict[str, int]


def send(proxy, upstream, models: list[str]) -> Sent:
    """One request per model, one at a time, each one's upstream calls counted by the recording
    upstream (reset between requests, so each call is attributed to its request)."""
    sent = Sent({}, {}, {}, {})
    for model in models:
        approach = model.rsplit("-jerry-xl", 1)[0] if model != "jerry-xl" else "none"
        upstream.reset()
        r = post(proxy, chat(model))
        assert r.status_code == 200, (model, r.text)
        calls = upstream.calls()
        assert calls and {c["model"] for c in calls} == {"jerry-xl"}, calls
        sent.requests[approach] = sent.requests.get(approach, 0) + 1
        sent.calls[approach] = sent.calls.get(approach, 0) + len(calls)
        sent.prompt[approach] = sent.prompt.get(approach, 0) + PROMPT_TOKENS_PER_CALL * len(calls)
        sent.completion[approach] = sent.completion.get(approach, 0) + sum(
            COMPLETION_TOKENS_PER_CHOICE * int(c["n"] or 1) for c in calls)
    return sent


@pytest.fixture(scope="module")
def traffic(metrics_proxy, upstream_session):
    """What the module's proxy served before any test looked: base, moa twice, one refusal."""
    sent = send(metrics_proxy, upstream_session, ["jerry-xl", "moa-jerry-xl", "moa-jerry-xl"])
    upstream_session.reset()
    refused = post(metrics_proxy, chat("cepo-jerry-xl"))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "approach-not-allowed", refused.text
    assert upstream_session.calls() == []
    return sent


def test_live_metrics_are_clean_and_count_what_the_upstream_saw(metrics_proxy, traffic):
    text = scrape(metrics_proxy.url)
    check_metrics(text)
    m = parse_metrics(text)
    assert total(m, "optillm_proxy_requests_total", approach="none", status="200") == 1
    assert total(m, "optillm_proxy_requests_total", approach="moa", status="200") == 2
    assert total(m, "optillm_proxy_requests_total", approach="-", status="400") == 1
    assert total(m, "optillm_proxy_requests_total") == 4
    assert total(m, "optillm_proxy_policy_refusals_total", rule="approach-not-allowed") == 1
    assert total(m, "optillm_proxy_policy_refusals_total") == 1
    assert traffic.calls == {"none": 1, "moa": 6}
    for approach, calls in traffic.calls.items():
        assert total(m, "optillm_proxy_upstream_calls_total", approach=approach) == calls, approach
        assert calls == FAN_OUT[approach] * traffic.requests[approach]
        assert total(m, "optillm_proxy_upstream_tokens_total", approach=approach, kind="prompt") == \
            traffic.prompt[approach], approach
        assert total(m, "optillm_proxy_upstream_tokens_total", approach=approach, kind="completion") == \
            traffic.completion[approach], approach
        assert total(m, "optillm_proxy_request_duration_seconds_count", approach=approach) == traffic.requests[approach]
    # moa's first call asks n=3: 21 completion tokens, then 7 and 7.
    assert traffic.completion["moa"] == 2 * (21 + 7 + 7)
    assert total(m, "optillm_proxy_upstream_calls_total", approach="-") == 0
    for quiet in ("errors", "retries", "timeouts"):
        assert total(m, f"optillm_proxy_upstream_{quiet}_total") == 0, quiet
    assert total(m, "optillm_proxy_deadline_exceeded_total") == 0
    assert total(m, "optillm_proxy_requests_in_flight") == 0
    assert total(m, "process_resident_memory_bytes") > 0
    # /health and /metrics themselves are not requests.
    httpx.get(f"{metrics_proxy.url}/health", timeout=5)
    assert total(parse_metrics(scrape(metrics_proxy.url)), "optillm_proxy_requests_total") == 4


def test_metrics_needs_no_key_and_answers_only_get(metrics_proxy):
    assert httpx.get(f"{metrics_proxy.url}/metrics", timeout=5).status_code == 200
    # Anything but GET falls through to optillm, which has no such route.
    assert httpx.post(f"{metrics_proxy.url}/metrics", timeout=5,
                      headers={"Authorization": f"Bearer {KEY}"}).status_code in (404, 405)


def test_a_real_prometheus_scrapes_the_launcher_and_the_rules_compute_its_fan_out(
        metrics_proxy, traffic, upstream_session, tmp_path):
    prometheus = start_prometheus(tmp_path, f"127.0.0.1:{metrics_proxy.port}")
    try:
        target = prometheus.wait_up()
        assert target["labels"]["job"] == JOB and target["scrapeUrl"].endswith(f":{metrics_proxy.port}/metrics")
        truth = parse_metrics(scrape(metrics_proxy.url))
        prometheus.wait_synced(truth, "optillm_proxy_requests_total", "optillm_proxy_upstream_calls_total")
        ratio = prometheus.query("sum by (approach) (optillm_proxy_upstream_calls_total)"
                                 " / sum by (approach) (optillm_proxy_requests_total)")
        assert ratio == {"none": 1.0, "moa": 3.0}, ratio
        tokens = prometheus.query('sum by (approach) (optillm_proxy_upstream_tokens_total{kind="completion"})')
        # Every allowed approach's series exist from the start at 0 (rate() must see a first event).
        assert {a: v for a, v in tokens.items() if v} == {"none": traffic.completion["none"],
                                                          "moa": traffic.completion["moa"]}, tokens
        assert {"bon", "plansearch", "self_consistency"} <= set(tokens), tokens

        # The recording rule: rate() sees only increments after the first scrape, so send more.
        more = send(metrics_proxy, upstream_session, ["moa-jerry-xl", "jerry-xl", "moa-jerry-xl"])
        assert more.calls == {"moa": 6, "none": 1}
        truth = parse_metrics(scrape(metrics_proxy.url))
        prometheus.wait_synced(truth, "optillm_proxy_requests_total", "optillm_proxy_upstream_calls_total")

        def recorded():
            got = prometheus.query("approach:optillm_proxy_upstream_calls_per_request:ratio_rate10m")
            got = {a: v for a, v in got.items() if not math.isnan(v)}
            return got if set(got) == {"none", "moa"} else None

        got = prometheus.wait_for("the calls-per-request recording rule for none and moa", recorded)
        assert got == pytest.approx({"none": 1.0, "moa": 3.0}, abs=0.01), got
        excluding = prometheus.query(
            "approach:optillm_proxy_upstream_calls_excluding_retries_per_request:ratio_rate10m")
        assert excluding == pytest.approx({"none": 1.0, "moa": 3.0}, abs=0.01), excluding
        expected = prometheus.query("approach:optillm_proxy_upstream_calls_per_request:expected")
        assert expected == {a: float(n) for a, n in FAN_OUT.items()}, expected

        health = prometheus.rule_health()
        assert set(ALERTS) <= set(health), health
        assert all(h == ("ok", "") for h in health.values()), health
        assert prometheus.query('ALERTS{alertstate="firing"}') == {}, "an alert fires on a healthy proxy"
    finally:
        prometheus.stop()
    assert prometheus.proc.returncode is not None


# -- a model that refuses `n`: the fan-out alert's own case ---------------------------------------

class _RefusesN(fake_upstream._Handler):
    """The recording upstream, except that a chat completion asking n > 1 gets 400 (recorded)."""

    def do_POST(self):
        if self.path.rstrip("/").endswith("/chat/completions"):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw or b"{}")
            if int(body.get("n") or 1) > 1:
                self._record(body)
                return self._send(400, {"error": {"message": "n > 1 is not supported by this model"}})
            # The body is read: hand it to the parent as its stream, then give the connection back
            # its own (keep-alive reads the next request from it).
            connection, self.rfile = self.rfile, io.BytesIO(raw)
            try:
                return super().do_POST()
            finally:
                self.rfile = connection
        return super().do_POST()


@pytest.fixture
def n_refusing_upstream():
    server = fake_upstream._Server(("127.0.0.1", 0), type("Handler", (_RefusesN,), {"state": fake_upstream._State()}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Upstream(server)
    server.shutdown()
    server.server_close()


def alert_expr(name: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return next(r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name)


def test_a_model_refusing_n_drives_the_fan_out_alert(lean_runtime, n_refusing_upstream, tmp_path):
    """optillm falls back to one call per completion: moa 6 calls, bon 7. Through a real launcher
    and a real Prometheus, the alert's expression (read from the rules file) selects both, and the
    alert is pending (its `for:` is 15 minutes)."""
    upstream = n_refusing_upstream
    (tmp_path / "proxy").mkdir()
    proxy = launch(lean_runtime, tmp_path / "proxy", upstream.base_url)
    prometheus = None
    try:
        # First requests create the series; rate() counts only what comes after the first scrape.
        assert send(proxy, upstream, ["moa-jerry-xl", "bon-jerry-xl", "jerry-xl"]).calls == \
            {"moa": 6, "bon": 7, "none": 1}
        (tmp_path / "prometheus").mkdir()
        prometheus = start_prometheus(tmp_path / "prometheus", f"127.0.0.1:{proxy.port}")
        prometheus.wait_up()
        prometheus.wait_synced(parse_metrics(scrape(proxy.url)), "optillm_proxy_upstream_calls_total")
        sent = send(proxy, upstream, ["moa-jerry-xl", "bon-jerry-xl", "jerry-xl"] * 2)
        assert sent.calls == {"moa": 12, "bon": 14, "none": 2}
        prometheus.wait_synced(parse_metrics(scrape(proxy.url)), "optillm_proxy_requests_total",
                               "optillm_proxy_upstream_calls_total", "optillm_proxy_upstream_retries_total")
        selected = prometheus.wait_selects(alert_expr("OptillmProxyFanOutAboveExpectation"), {"moa", "bon"})
        assert selected == pytest.approx({"moa": 6.0, "bon": 7.0}, abs=0.01), selected
        prometheus.wait_selects('ALERTS{alertname="OptillmProxyFanOutAboveExpectation", alertstate="pending"}',
                                {"moa", "bon"})
        assert prometheus.query('ALERTS{alertstate="firing"}') == {}
    finally:
        if prometheus is not None:
            prometheus.stop()
        proxy.stop()
