"""`opsctl health` and `opsctl smoke` against a REAL optillm 0.3.12 (full lock) and the recording upstream.

This is where the strategy-ran signal (answer shape, see ops/probes/smoke.py) is proven: the same smoke
passes against the server in auto mode and names every strategy skipped with `--approach proxy`.
opsctl runs as a subprocess (the installed console script), the key reaches it by environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.runtime import start_optillm
from tests.fixtures.upstream import start_upstream
from tests.probe_helpers import opsctl_bin

pytestmark = pytest.mark.real

BASE = "jerry-xl"
FAN_OUT = {"jerry-xl": 1, "moa-jerry-xl": 3, "bon-jerry-xl": 4, "plansearch-jerry-xl": 4,
           "self_consistency-jerry-xl": 5}
STRATEGIES = [m for m in FAN_OUT if m != BASE]
UPSTREAM_KEY = "Bearer upstream-key-for-tests"  # OPENAI_API_KEY given to optillm by the fixture




def opsctl(*args: str, key: str | None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPSCTL_API_KEY"}
    if key:
        env["OPSCTL_API_KEY"] = key
    proc = subprocess.run([opsctl_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


@pytest.fixture
def env_file(tmp_path) -> Path:
    path = tmp_path / "env"
    path.write_text("OPENAI_API_KEY=upstream-key-for-tests\nPROXY_PLUGINS=none\n")
    return path


@pytest.fixture(scope="module")
def auto_proxy(full_runtime, upstream_session, tmp_path_factory):
    """One real optillm in auto mode (no --approach, as the unit runs it), shared by this module."""
    handle = start_optillm(full_runtime, tmp_path_factory.mktemp("auto"), upstream_session.base_url)
    yield handle
    handle.stop()


def smoke_json(proxy, *args: str) -> tuple[int, dict]:
    proc = opsctl("smoke", "--url", proxy.url, "--json", *args, key=proxy.key)
    return proc.returncode, json.loads(proc.stdout)


def test_smoke_all_passes_in_auto_mode_with_the_real_fan_out(auto_proxy, upstream, env_file):
    proc = opsctl("smoke", "--all", "--url", auto_proxy.url, "--env-file", str(env_file), key=auto_proxy.key)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5/5 passed" in proc.stdout
    calls = upstream.calls()
    assert len(calls) == sum(FAN_OUT.values())
    assert {c["model"] for c in calls} == {BASE}  # loop avoidance: only the base name goes upstream
    assert {c["authorization"] for c in calls} == {UPSTREAM_KEY}  # never the proxy key

    for model, expected in FAN_OUT.items():
        upstream.reset()
        code, report = smoke_json(auto_proxy, model)
        assert code == 0, report
        row = report["rows"][0]
        assert row["result"] == "pass"
        assert row["strategy_ran"] is (None if model == BASE else True)
        assert row["completion_tokens"] > 0
        assert len(upstream.calls()) == expected, (model, upstream.calls())


def test_plugin_prefix_from_env_file_is_checked(auto_proxy, upstream, tmp_path):
    env_file = tmp_path / "env-plugins"
    env_file.write_text("PROXY_PLUGINS=majority_voting\n")
    code, report = smoke_json(auto_proxy, "--all", "--env-file", str(env_file))
    assert code == 0, report
    rows = {r["model"]: r for r in report["rows"]}
    assert rows["majority_voting-jerry-xl"]["result"] == "pass"
    assert rows["majority_voting-jerry-xl"]["strategy_ran"] is True
    assert {c["model"] for c in upstream.calls()} == {BASE}


def test_health_is_ok_against_the_real_proxy(auto_proxy):
    proc = opsctl("health", "--url", auto_proxy.url, "--json", key=None)
    assert proc.returncode == 0, proc.stdout
    facts = json.loads(proc.stdout)
    assert (facts["state"], facts["endpoint"], facts["http_status"]) == ("OK", "/health", 200)


def test_upstream_failing_500_fails_smoke_naming_the_upstream(auto_proxy, upstream, env_file):
    upstream.fail_with(500)
    proc = opsctl("smoke", "--all", "--url", auto_proxy.url, "--env-file", str(env_file), key=auto_proxy.key)
    assert proc.returncode == 1, proc.stdout
    for model in FAN_OUT:
        assert f"{model}: upstream error via proxy" in proc.stdout, proc.stdout
    # The proxy itself is fine: health must not page anyone for an upstream outage.
    assert opsctl("health", "--url", auto_proxy.url, key=None).returncode == 0


def test_proxy_mode_smoke_fails_and_names_each_skipped_strategy(full_runtime, upstream, optillm_factory, env_file):
    proxy = optillm_factory(full_runtime, upstream.base_url, extra_args=["--approach", "proxy"])
    proc = opsctl("smoke", "--all", "--url", proxy.url, "--env-file", str(env_file), key=proxy.key)
    assert proc.returncode == 1, proc.stdout
    for model in STRATEGIES:
        approach = model.split("-", 1)[0]
        assert f"{model}: strategy {approach} did not run" in proc.stdout, proc.stdout
    assert "strategy skipped: " + ", ".join(STRATEGIES) in proc.stdout
    code, report = smoke_json(proxy, *FAN_OUT)
    assert code == 1
    assert {r["model"]: (r["result"], r["strategy_ran"]) for r in report["rows"]} == {
        BASE: ("pass", None), **{m: ("skipped", False) for m in STRATEGIES}}
    calls = upstream.calls()
    assert {c["model"] for c in calls} == {BASE}
    assert {c["authorization"] for c in calls} == {UPSTREAM_KEY}


def test_upstream_stopped_then_back_and_proxy_stopped(full_runtime, optillm_factory, env_file):
    """LiteLLM down: health OK, smoke fails naming the upstream; back: smoke passes, no proxy restart.
    Proxy down: health CRITICAL, smoke unreachable (2)."""
    upstream, stop_upstream = start_upstream()
    try:
        proxy = optillm_factory(full_runtime, upstream.base_url)
    finally:
        stop_upstream()
    port = upstream.port

    assert opsctl("health", "--url", proxy.url, key=None).returncode == 0
    proc = opsctl("smoke", "jerry-xl", "moa-jerry-xl", "--url", proxy.url, key=proxy.key)
    assert proc.returncode == 1, proc.stdout
    assert "jerry-xl: upstream error via proxy (500): Connection error." in proc.stdout
    assert "moa-jerry-xl: upstream error via proxy: moa got no completion from the upstream" in proc.stdout

    upstream, stop_upstream = start_upstream(port=port)
    try:
        proc = opsctl("smoke", "--all", "--url", proxy.url, "--env-file", str(env_file), key=proxy.key)
        assert proc.returncode == 0, proc.stdout
        assert proxy.proc.poll() is None  # the same process, never restarted
    finally:
        stop_upstream()

    proxy.stop()
    proc = opsctl("health", "--url", proxy.url, key=None)
    assert proc.returncode == 2
    assert proc.stdout.startswith("OPTILLM-PROXY CRITICAL - connection refused"), proc.stdout
    assert opsctl("smoke", "jerry-xl", "--url", proxy.url, key=proxy.key).returncode == 2
