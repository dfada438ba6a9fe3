"""The fleet path (ansible/) against two booted boxes, each in its own network namespace, over ssh.

In file order, on one fleet (fixture `fleet`, tests/fixtures/fleet.py): site.yml installs both
hosts (changed), converges again with changed=0 and nothing restarted, the testinfra suite passes
on both through Ansible's inventory, and upgrade.yml rolls a new lock out one host at a time:
fleet1 upgrades and serves; fleet2's canary lock (host var) lacks math-verify, install.sh
--upgrade refuses it at validation, fleet2 is checked healthy on its runtime and the play fails
naming fleet2 and why. Then the same valid lock for both with a site acceptance test
(optillm_proxy_upgrade_acceptance) that rejects fleet2's new runtime: fleet2 switches, fails it,
and the playbook's own install.sh --rollback puts it back, healthy. The lint checks of the
playbooks are in tests/test_ansible.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from ops.from_launcher.layout import DEFAULT as L
from tests.fixtures.box import record

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[1]
# Checks in tests/testinfra/test_deployed_host.py per host (as tests/test_box_testinfra.py counts).
MIN_CHECKS_PER_HOST = 12


def current_runtime(host) -> str:
    return (host.box.root / str(L.current).lstrip("/")).readlink().name


def show(host, unit: str, *props: str) -> dict[str, str]:
    out = host.box.check(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def serving(host) -> None:
    """opsctl health and smoke --all in the box, through its own LiteLLM."""
    health = host.box.run("opsctl health --wait 60")
    assert health.rc in (0, 1), f"{host.name}: {health.stdout}{health.stderr}"
    smoke = host.box.run("opsctl smoke --all", timeout=600)
    assert smoke.ok, f"{host.name}: {smoke.stdout[-2000:]}{smoke.stderr[-2000:]}"


def no_secret_in(output: str, fleet) -> None:
    for host in fleet.hosts:
        for key in (host.upstream_key, host.api_key):
            assert key not in output, f"a key of {host.name} is in the playbook's output"


@pytest.fixture(scope="module")
def state(fleet):
    """What the tests learn as they go (service PIDs, socket invocations, runtimes)."""
    return {}


def test_first_run_installs_both_hosts(fleet, state):
    started = time.monotonic()
    result = fleet.playbook("site.yml")
    record("fleet: site.yml first run (two hosts, in parallel) s", round(time.monotonic() - started, 1))
    assert result.rc == 0, result.output[-6000:]
    for host in fleet.hosts:
        assert result.changed(host.name) > 0 and result.failed(host.name) == 0, result.recap
        # The keys the role wrote (from a file for fleet1, from Vault for fleet2), root 0600.
        for path, want in ((L.upstream_key_file, host.upstream_key), (L.key_file, host.api_key)):
            on_box = host.box.root / str(path).lstrip("/")
            assert on_box.read_text().strip() == want, f"{host.name}: {path}"
            assert oct(on_box.stat().st_mode & 0o777) == "0o600", f"{host.name}: {path}"
        health = host.box.run("opsctl health")
        assert health.rc in (0, 1), f"{host.name}: {health.stdout}{health.stderr}"
        state[host.name] = {
            "pid": show(host, "optillm-proxy.service", "MainPID")["MainPID"],
            "socket": show(host, "optillm-proxy.socket", "InvocationID")["InvocationID"],
            "runtime": current_runtime(host),
        }
    # Each host was checked by the role's handler after install.sh changed it: health, then smoke
    # --all through the host's own LiteLLM (the play failed otherwise).
    handler = result.output.split("RUNNING HANDLER [optillm_proxy : Smoke every model", 1)
    assert len(handler) == 2, result.output[-4000:]
    assert {"ok: [fleet1]", "ok: [fleet2]"} <= set(handler[1].split("\n\n", 1)[0].splitlines()), handler[1][:500]
    no_secret_in(result.output, fleet)


def test_second_run_changes_nothing(fleet, state):
    started = time.monotonic()
    result = fleet.playbook("site.yml")
    record("fleet: site.yml second run s", round(time.monotonic() - started, 1))
    assert result.rc == 0, result.output[-6000:]
    for host in fleet.hosts:
        assert result.recap[host.name]["changed"] == 0, (host.name, result.recap, result.output[-6000:])
        assert show(host, "optillm-proxy.service", "MainPID")["MainPID"] == state[host.name]["pid"]
        assert show(host, "optillm-proxy.socket", "InvocationID")["InvocationID"] == state[host.name]["socket"]
    no_secret_in(result.output, fleet)
    # --check predicts the same through install.sh --dry-run, and writes nothing.
    check = fleet.playbook("site.yml", "--check")
    assert check.rc == 0, check.output[-6000:]
    assert all(check.changed(host.name) == 0 for host in fleet.hosts), check.recap
    for host in fleet.hosts:
        assert show(host, "optillm-proxy.service", "MainPID")["MainPID"] == state[host.name]["pid"]


def test_testinfra_suite_passes_on_the_fleet_through_the_inventory(fleet):
    """ansible/README.md's command (tests/testinfra/run.sh with the inventory), from the controller:
    run.sh builds the suite's venv from uv.lock (offline, from the host's uv cache) and checks
    every host of the group over ssh."""
    from tests.box.machine import host_uv_cache

    started = time.monotonic()
    rc, output = fleet.controller(
        [str(REPO / "tests" / "testinfra" / "run.sh"), f"--ansible-inventory={fleet.inventory}",
         "--hosts=ansible://optillm_proxy", "-q", "-rA"], cwd=REPO,
        env={"TESTINFRA_VENV": str(fleet.workdir / "testinfra-venv"), "UV_OFFLINE": "1",
             "UV_CACHE_DIR": str(host_uv_cache())})
    record("fleet: testinfra suite over ssh on both hosts, venv build included s", round(time.monotonic() - started, 1))
    assert rc == 0, output[-6000:]
    for host in fleet.hosts:
        assert len(re.findall(rf"PASSED .*\[ansible://{host.name}\b", output)) >= MIN_CHECKS_PER_HOST, output[-4000:]
    assert not re.search(r"\d+ (failed|skipped|error)", output), output[-3000:]
    record("fleet: testinfra suite", re.search(r"\d+ passed", output).group(0))


def test_rolling_upgrade_stops_at_the_failing_host_which_is_left_healthy(fleet, state):
    host1, host2 = fleet.hosts
    good_sha = hashlib.sha256(fleet.upgrade_locks["fleet1"].read_bytes()).hexdigest()
    started = time.monotonic()
    result = fleet.playbook("upgrade.yml")
    record("fleet: upgrade.yml (fleet1 upgraded, fleet2 refused) s", round(time.monotonic() - started, 1))
    output = result.output
    assert result.rc != 0, f"the rollout should have failed on fleet2:\n{output[-6000:]}"
    assert result.failed("fleet1") == 0 and result.changed("fleet1") > 0, result.recap
    assert result.failed("fleet2") == 1, result.recap
    # One host at a time, fleet1 first: fleet2 was only touched after fleet1 was done.
    assert output.index("TASK") < output.index("fleet1") < output.index("fleet2")

    # fleet1: on the new runtime, built from the new lock; the socket never restarted.
    runtime1 = current_runtime(host1)
    assert runtime1 != state["fleet1"]["runtime"]
    manifest = json.loads((host1.box.root / str(L.runtimes).lstrip("/") / runtime1 /
                           "optillm-proxy-runtime.json").read_text())
    assert manifest["lock_sha256"] == good_sha
    assert show(host1, "optillm-proxy.socket", "InvocationID")["InvocationID"] == state["fleet1"]["socket"]
    serving(host1)

    # fleet2: refused at validation, never switched, still serving its runtime.
    assert current_runtime(host2) == state["fleet2"]["runtime"]
    serving(host2)
    failure = re.search(r"fleet2: upgrade failed: (.*?)The rollout stopped here", output, re.S)
    assert failure, output[-6000:]
    reason = " ".join(failure.group(1).split())
    print("the play's failure:", reason)
    assert "refused" in reason and "at validation" in reason, reason
    assert re.search(r"math[-_]verify", reason), reason
    assert f"serving {state['fleet2']['runtime']}, healthy, smoke passed" in reason, reason
    no_secret_in(output, fleet)


# Stands in for a site's acceptance test rejecting the new runtime (optillm_proxy_upgrade_acceptance;
# a real one would run `opsctl eval` on the site's tasks against a threshold): it accepts only a
# runtime built from a lock the site approved, read from the runtime's manifest via `opsctl runtime
# list`, so on fleet2 it passes on the old runtime and fails on the candidate, which health and
# smoke accept.
SITE_ACCEPTANCE = "/usr/local/sbin/site-acceptance"
SITE_APPROVED = "/etc/site-acceptance/approved-locks"
SITE_ACCEPTANCE_SCRIPT = f"""#!/bin/bash
set -euo pipefail
lock="$(opsctl runtime list | awk '$1 == "current" {{ sub("^lock=", "", $NF); print $NF }}')"
if ! grep -qxF "${{lock:-none}}" {SITE_APPROVED}; then
  echo "site acceptance: the current runtime's lock ${{lock:-none}} is not approved here" >&2
  exit 1
fi
echo "site acceptance: lock ${{lock}} approved"
"""


def runtime_link(host, link: Path) -> str | None:
    path = host.box.root / str(link).lstrip("/")
    return path.readlink().name if path.is_symlink() else None


def runtime_lock(host, runtime: str) -> str:
    manifest = host.box.root / str(L.runtimes).lstrip("/") / runtime / "optillm-proxy-runtime.json"
    return json.loads(manifest.read_text())["lock_sha256"]


def test_a_host_failing_the_sites_acceptance_test_is_rolled_back_by_the_playbook(fleet, state):
    """After the first rollout (fleet1 on the next lock, fleet2 on its first runtime), the same
    next lock for both, with an acceptance test: fleet1 is already current and passes it; fleet2
    builds, validates and switches (install.sh --upgrade succeeds, health and smoke pass), its
    acceptance test rejects the new runtime, and the playbook's rescue runs install.sh --rollback,
    checks fleet2 healthy on its old runtime and stops the rollout naming fleet2 and why."""
    host1, host2 = fleet.hosts
    next_lock = fleet.upgrade_locks["fleet1"]
    next_sha = hashlib.sha256(next_lock.read_bytes()).hexdigest()
    runtime1, old2 = current_runtime(host1), current_runtime(host2)
    assert old2 == state["fleet2"]["runtime"] and runtime_lock(host1, runtime1) == next_sha
    previous2 = runtime_link(host2, L.previous)
    for host, approved in ((host1, next_sha), (host2, runtime_lock(host2, old2))):
        script = host.box.root / SITE_ACCEPTANCE.lstrip("/")
        script.write_text(SITE_ACCEPTANCE_SCRIPT)
        script.chmod(0o755)
        approved_file = host.box.root / SITE_APPROVED.lstrip("/")
        approved_file.parent.mkdir(parents=True, exist_ok=True)
        approved_file.write_text(approved[:12] + "\n")
    # Passes on fleet2's old runtime: the rejection below is of the new one.
    assert host2.box.run(SITE_ACCEPTANCE).ok

    acceptance = [["opsctl", "runtime", "check"], [SITE_ACCEPTANCE]]
    started = time.monotonic()
    result = fleet.playbook("upgrade.yml", "-e", f"optillm_proxy_upgrade_lock={next_lock}",
                            "-e", json.dumps({"optillm_proxy_upgrade_acceptance": acceptance}))
    record("fleet: upgrade.yml (fleet1 current, fleet2 rejected by acceptance, rolled back) s",
           round(time.monotonic() - started, 1))
    output = result.output
    assert result.rc != 0, f"the rollout should have failed on fleet2:\n{output[-6000:]}"
    assert result.failed("fleet1") == 0 and result.failed("fleet2") == 1, result.recap

    # Both acceptance commands ran and passed on fleet1 (still on its runtime), then on fleet2.
    ran = re.findall(r"TASK \[optillm_proxy : Run the site's acceptance command\][^\n]*\n(?:\n)?(\S+ \[fleet\d\])",
                     output)
    assert ran == ["ok: [fleet1]", "ok: [fleet1]", "ok: [fleet2]", "ok: [fleet2]"], ran
    assert current_runtime(host1) == runtime1
    serving(host1)

    # fleet2 switched to the new runtime, and install.sh --rollback switched it back: the runtime
    # it rejected is now `previous` (a rollback swaps the links), the socket never restarted.
    assert re.search(r"TASK \[optillm_proxy : Roll back \(install\.sh --rollback\)\][^\n]*\n\s*changed: \[fleet2\]",
                     output), output[-6000:]
    assert current_runtime(host2) == old2
    rejected = runtime_link(host2, L.previous)
    assert rejected not in (None, old2, previous2), (rejected, previous2)
    assert runtime_lock(host2, rejected) == next_sha
    assert show(host2, "optillm-proxy.socket", "InvocationID")["InvocationID"] == state["fleet2"]["socket"]
    serving(host2)

    failure = re.search(r"fleet2: upgrade failed: (.*?)The rollout stopped here", output, re.S)
    assert failure, output[-6000:]
    reason = " ".join(failure.group(1).split())
    print("the play's failure:", reason)
    assert (f"acceptance check {SITE_ACCEPTANCE} failed (exit 1): site acceptance: the current runtime's "
            f"lock {next_sha[:12]} is not approved here") in reason, reason
    assert f"rolled back with install.sh --rollback: serving {old2}, healthy, smoke passed" in reason, reason
    no_secret_in(output, fleet)


def test_a_host_failing_before_the_upgrade_stops_the_rollout_untouched(fleet, state):
    """Runs last: fleet1's LiteLLM is stopped, so its smoke fails before anything is touched; the
    rollout stops at fleet1 and never reaches fleet2."""
    host1, host2 = fleet.hosts
    runtimes = {h.name: current_runtime(h) for h in fleet.hosts}
    pid2 = show(host2, "optillm-proxy.service", "MainPID")["MainPID"]
    litellm = next(p for p in host1.processes if hasattr(p, "stop"))
    litellm.stop()
    result = fleet.playbook("upgrade.yml")
    assert result.rc != 0, result.output[-6000:]
    assert result.failed("fleet1") == 1 and result.changed("fleet1") == 0, result.recap
    assert "fleet2" not in result.recap, "the rollout went on past the failing host"
    stopped = re.search(r"fleet1: not upgraded, it was failing its checks BEFORE the upgrade: (.*?)"
                        r"The rollout stopped here", result.output, re.S)
    assert stopped, result.output[-6000:]
    print("the play's failure:", " ".join(stopped.group(1).split()))
    assert {h.name: current_runtime(h) for h in fleet.hosts} == runtimes
    assert show(host2, "optillm-proxy.service", "MainPID")["MainPID"] == pid2
