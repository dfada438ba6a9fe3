"""Issue 6's faults, each outcome asserted, on the real unit in the booted box (fixture `box`).

Each test leaves the service as it found it: env file restored, start-rate counter reset, healthy.
The start-rate counter (StartLimitBurst= in StartLimitIntervalSec=) is reset before each fault so
one test's restarts do not decide the next one's outcome. Recovery times are recorded for the
summary, never asserted.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from ops.from_launcher.layout import DEFAULT as LAYOUT, LISTEN_PORT, SERVICE
from tests.box import service
from tests.box.install import assert_rerun_changes_nothing
from tests.box.machine import INSTALL_ENV
from tests.fixtures.box import record

pytestmark = pytest.mark.box

EX_CONFIG = "78"


def env_path(box):
    return box.root / str(LAYOUT.env_file).lstrip("/")


def upstream_key_path(box):
    return box.root / str(LAYOUT.upstream_key_file).lstrip("/")


def proxy_key_path(box):
    return box.root / str(LAYOUT.key_file).lstrip("/")


def write_env(box, text: str) -> None:
    # Same file the box sees (nspawn -D on a plain directory); keep it root 0600 as install.sh made it.
    path = env_path(box)
    path.write_text(text)
    path.chmod(0o600)


def state(box) -> dict[str, str]:
    return service.show(box, "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus", "MainPID")


def wait_settled_failed(box, timeout: float = 180.0) -> dict[str, str]:
    """Wait until the unit failed and nothing can start it again, then prove the restart counter
    did not move meanwhile."""
    before = state(box)
    why = service.wait_settled_failed(box, timeout)
    later = state(box)
    assert not why, f"unit not settled failed after {timeout}s ({why}): {later}"
    assert later["ActiveState"] == "failed" and later["NRestarts"] == before["NRestarts"], \
        f"unit keeps restarting: {before} -> {later}"
    return later


@pytest.fixture
def restore(box):
    """Put the service back: original env and upstream key files, no failed state, socket and
    service up (starting the service starts its socket: Requires=), healthy."""
    original = env_path(box).read_text()
    key = upstream_key_path(box).read_text()
    proxy_key = proxy_key_path(box).read_text()
    service.reset_start_limit(box)
    yield
    write_env(box, original)
    upstream_key_path(box).write_text(key)
    proxy_key_path(box).write_text(proxy_key)
    box.run(f"systemctl reset-failed {SERVICE} {SERVICE}.socket")
    if not (box.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active" and service.healthy()):
        box.run(f"systemctl restart {SERVICE}", timeout=120)
    service.wait_healthy(box, timeout=120)
    assert box.run(f"systemctl is-active {SERVICE}.socket").stdout.strip() == "active"


def test_five_kill_9_in_a_row_each_recovers(box, restore):
    times = []
    for _ in range(5):
        restarts = service.n_restarts(box)
        times.append(round(service.kill_and_recover(box, signal.SIGKILL), 2))
        assert service.n_restarts(box) == restarts + 1
    record("5x kill -9 -> healthy s", times)
    assert box.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"


def test_upstream_stopped_health_ok_smoke_names_upstream(box, box_upstream, restore):
    pid = service.main_pid(box)
    box_upstream.stop()
    try:
        health = box.run("opsctl health")
        assert health.rc == 0, f"health should stay OK with the upstream down: {health.stdout}{health.stderr}"
        smoke = box.run("opsctl smoke --all")
        assert smoke.rc == 1, f"smoke exit {smoke.rc}: {smoke.stdout}{smoke.stderr}"
        assert re.search(r"upstream", smoke.stdout + smoke.stderr, re.I), smoke.stdout + smoke.stderr
    finally:
        box_upstream.start()
    smoke = box.run("opsctl smoke --all")
    assert smoke.rc == 0, f"smoke after the upstream came back: {smoke.stdout}{smoke.stderr}"
    # Recovered without touching the proxy.
    assert service.main_pid(box) == pid


def test_env_file_with_optillm_api_key_is_linted_and_refused(box, restore):
    original = env_path(box).read_text()
    write_env(box, original + "OPTILLM_API_KEY=opx-should-not-be-here\n")
    lint = box.run("opsctl lint")
    assert lint.rc == 1, f"lint exit {lint.rc}: {lint.stdout}{lint.stderr}"
    assert "OPTILLM_API_KEY" in lint.stdout + lint.stderr
    assert str(LAYOUT.env_file) in lint.stdout + lint.stderr
    restarts_before = service.n_restarts(box)
    restart = box.run(f"systemctl restart {SERVICE}", timeout=120)
    assert restart.rc != 0, "a refused configuration must fail the start"
    settled = wait_settled_failed(box)
    # The launcher refused (exit 78) and RestartPreventExitStatus=78 kept systemd from retrying.
    assert settled["ExecMainStatus"] == EX_CONFIG, settled
    assert int(settled["NRestarts"]) == restarts_before, "a config refusal must not be retried"
    assert "OPTILLM_API_KEY" in service.journal(box, 30)
    assert not service.healthy()


# What the key file holds -> what the launcher's one refusal line says about it.
BAD_UPSTREAM_KEYS = {
    "empty": ("", "is empty"),
    "placeholder": ("replace-with-the-litellm-key\n", "still holds the placeholder replace-with-the-litellm-key"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPSTREAM_KEYS))
def test_empty_or_placeholder_upstream_key_is_linted_and_refused(box, restore, case):
    """Stock 0.3.12 would start 'healthy' and answer every completion with an HTML 500 (its LiteLLM
    wrapper fallback); the launcher refuses at start instead, one line, no restart loop."""
    text, says = BAD_UPSTREAM_KEYS[case]
    upstream_key_path(box).write_text(text)
    lint = box.run("opsctl lint")
    assert lint.rc == 1, f"lint exit {lint.rc}: {lint.stdout}{lint.stderr}"
    assert "openai-key-missing" in lint.stdout, lint.stdout
    restarts_before = service.n_restarts(box)
    restart = box.run(f"systemctl restart {SERVICE}", timeout=120)
    assert restart.rc != 0, "a refused configuration must fail the start"
    settled = wait_settled_failed(box)
    assert settled["ExecMainStatus"] == EX_CONFIG, settled
    assert int(settled["NRestarts"]) == restarts_before, "a config refusal must not be retried"
    journal = service.journal(box, 30)
    refusals = [line for line in journal.splitlines() if "optillm-proxy-launcher: refused:" in line]
    assert refusals and says in refusals[-1], journal[-2000:]
    assert "Traceback" not in journal
    assert not service.healthy()


def test_port_taken_fails_visibly_without_flapping(box, restore):
    # systemd holds the port through the socket unit: stop both, then take the port.
    box.check(f"systemctl stop {SERVICE} {SERVICE}.socket")
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", LISTEN_PORT))
        blocker.listen(1)
        restarts = service.n_restarts(box)
        start = box.run(f"systemctl start {SERVICE}", timeout=120)
        assert start.rc != 0, "start must fail while the port is taken"
        # The socket cannot bind, so the service never starts: failed at once, no restart loop.
        socket_state = service.show(box, "ActiveState", "Result", unit=f"{SERVICE}.socket")
        assert socket_state["ActiveState"] == "failed", socket_state
        # The socket failed and no job is queued: nothing is left that could retry.
        jobs = box.check("systemctl list-jobs --no-legend --plain")
        assert f" {SERVICE}." not in f" {jobs}", jobs
        assert service.n_restarts(box) == restarts
        assert box.run(f"systemctl is-active {SERVICE}").stdout.strip() != "active"
        record("port taken: final socket state", f"{socket_state['ActiveState']}/{socket_state['Result']}")
        journal = box.run(f"journalctl -u {SERVICE}.socket --no-pager -n 50 -o cat").stdout
        assert re.search(r"Address already in use", journal, re.I), journal[-3000:]
    finally:
        blocker.close()
    box.check(f"systemctl reset-failed {SERVICE} {SERVICE}.socket && systemctl start {SERVICE}", timeout=120)
    service.wait_healthy(box)


def test_box_reboot_service_comes_back_by_itself(box):
    before = service.show(box, "InvocationID")["InvocationID"]
    start = time.monotonic()
    box.reboot()
    service.wait_healthy(box, timeout=180)
    record("systemctl reboot of the box -> proxy healthy s", round(time.monotonic() - start, 1))
    assert box.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    assert service.show(box, "InvocationID")["InvocationID"] != before


# The four configurations that used to restart a healthy service into an outage (issue 20): the
# launcher would refuse each, so install.sh now refuses first and leaves the service serving.
BAD_CONFIGURATIONS = {
    "plugin the lean profile cannot import": ("env", "PROXY_PLUGINS=majority_voting,json\n",
                                              "plugin(s) json cannot be imported by this runtime's 'lean' profile"),
    "OPTILLM_API_KEY in the env file": ("env", "OPTILLM_API_KEY=x\n", "OPTILLM_API_KEY is set in the environment"),
    "typo in a plugin slug": ("env", "PROXY_PLUGINS=majorty_voting\n", "unknown plugin 'majorty_voting'"),
    "proxy key starting with sk-": ("key", "sk-0123456789abcdefghijklmnopqrstuvwxyz\n", "starts with sk-"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGURATIONS))
def test_install_sh_leaves_a_healthy_service_alone_on_a_configuration_the_launcher_refuses(box, restore, case):
    where, text, finding = BAD_CONFIGURATIONS[case]
    if where == "env":
        write_env(box, env_path(box).read_text() + text)
    else:
        proxy_key_path(box).write_text(text)
    pid = service.main_pid(box)
    result = box.run("cd /repo && bash ./install.sh", env=INSTALL_ENV, timeout=900)
    output = result.stdout + result.stderr
    assert result.rc == 6, f"expected exit 6 (configuration refused), got {result.rc}:\n{output[-3000:]}"
    assert finding in output, output[-3000:]
    assert "NOT RESTARTED: the launcher would refuse the new configuration" in output
    assert "changed:   nothing (no change; nothing restarted)" not in output  # no self-contradiction
    assert service.main_pid(box) == pid and service.healthy(), "the healthy service was touched"


def test_ten_operator_restarts_in_a_minute_leave_the_service_running(box, restore):
    start = time.monotonic()
    for i in range(10):
        result = box.run(f"systemctl restart {SERVICE}", timeout=120)
        assert result.ok, f"restart {i + 1} refused: {result.stdout}{result.stderr}"
    record("10 operator restarts took s", round(time.monotonic() - start, 1))
    service.wait_healthy(box)
    assert box.run(f"systemctl is-active {SERVICE}.socket").stdout.strip() == "active"


def test_install_sh_names_and_clears_a_start_limit_hit_after_a_crash_loop(box, restore):
    """A crash loop ends in start-limit-hit, which then refuses the operator's own `systemctl
    start`; opsctl health must name it, and install.sh must say so and bring the service back, not
    exit 4 on the limit."""
    # The runtime's interpreter made unusable: every start fails (203/EXEC, which Restart= retries)
    # until StartLimitBurst. Nothing in the unit changes, so no daemon-reload (which, on systemd
    # 252, would forget the start counter) stands between the loop and the operator's start.
    python = f"{LAYOUT.current}/bin/python"
    box.check(f"mv {python} {python}.away")
    try:
        box.run(f"systemctl restart {SERVICE}", timeout=60)
        # systemd keeps the first failure as Result (exit-code); the journal says the limit was hit.
        deadline = time.monotonic() + 180
        while "Start request repeated too quickly" not in service.journal(box, 20) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state(box)["ActiveState"] == "failed", f"the crash loop did not end at the start limit: {state(box)}"
    finally:
        box.check(f"mv {python}.away {python}")
    refused = box.run(f"systemctl start {SERVICE}", timeout=60)
    assert not refused.ok, "systemd no longer refuses a start after start-limit-hit: the test proves nothing"
    # The probe monitoring runs says why the service is down and will stay down (as any user).
    probe = box.run("runuser -u nobody -- opsctl health --timeout 5", timeout=60)
    assert probe.rc == 2 and "start-limit-hit" in probe.stdout and "reset-failed" in probe.stdout, \
        f"opsctl health exited {probe.rc}: {probe.stdout}{probe.stderr}"
    result = box.run("cd /repo && bash ./install.sh", env=INSTALL_ENV, timeout=900)
    output = result.stdout + result.stderr
    assert result.ok, f"install.sh exited {result.rc} after a start-limit-hit:\n{output[-3000:]}"
    assert f"cleared {SERVICE}'s start-limit-hit" in output, output[-3000:]
    assert service.healthy() and box.run(f"systemctl is-active {SERVICE}.socket").stdout.strip() == "active"


def test_opsctl_key_rotate_refuses_the_old_key_and_accepts_the_new_one(box, restore):
    old = proxy_key_path(box).read_text().strip()
    pid = service.main_pid(box)
    try:
        result = box.run("opsctl key rotate", timeout=600)
        output = result.stdout + result.stderr
        assert result.ok, f"opsctl key rotate exited {result.rc}: {output[-2000:]}"
        new = proxy_key_path(box).read_text().strip()
        assert new != old and new.startswith("opx-") and new not in output
        assert (proxy_key_path(box).stat().st_mode & 0o777) == 0o600
        assert service.main_pid(box) != pid  # one reload: a new launcher took over
        models = f"http://127.0.0.1:{LISTEN_PORT}/v1/models"
        assert urllib_status(models, old) == 401 and urllib_status(models, new) != 401
        assert new not in box.run(f"journalctl -u {SERVICE} --no-pager -n 300").stdout
        assert_rerun_changes_nothing(box, "opsctl key rotate")
    finally:
        # Back to the key LiteLLM (box_upstream) presents, for the tests after this one, the way an
        # operator puts a key in place: edit the file, re-run install.sh (one restart).
        proxy_key_path(box).write_text(old + "\n")
        box.run(f"systemctl reset-failed {SERVICE}")
        assert box.run("cd /repo && bash ./install.sh", env=INSTALL_ENV, timeout=900).ok
        service.wait_healthy(box)


def urllib_status(url: str, key: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
