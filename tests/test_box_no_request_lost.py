"""No request lost: restarts, upgrades and rollbacks under load, in the booted box (real systemd).

8 clients call `moa-jerry-xl` on the proxy in a loop while the recording upstream behind the real
LiteLLM answers each call after 1 s, so a request spends seconds inside optillm. Each operator
action below restarts the service under that load; the socket unit keeps 127.0.0.1:4020 and the
launcher drains, so every request must be answered 200: no refused connection, no reset, no other
status. Counts are recorded in the box figures. kill -9 may fail the killed process's own requests
(counted), never a new connection.
"""

from __future__ import annotations

import collections
import shlex
import threading
import time

import httpx
import pytest

from ops.from_launcher.layout import BASE_MODEL, DEFAULT as LAYOUT, LISTEN_PORT, SERVICE
from tests.box import service
from tests.box.machine import INSTALL_ENV
from tests.fixtures.box import record

pytestmark = pytest.mark.box

CLIENTS = 8
UPSTREAM_SECONDS = 1.0
MAX_LOAD_SECONDS = 300  # every load run stops by itself
URL = f"http://127.0.0.1:{LISTEN_PORT}/v1/chat/completions"


def proxy_key(box) -> str:
    return (box.root / str(LAYOUT.key_file).lstrip("/")).read_text().strip()


class Load:
    """CLIENTS threads calling the proxy until stopped (or MAX_LOAD_SECONDS), counting outcomes."""

    def __init__(self, key: str, model: str = f"moa-{BASE_MODEL}") -> None:
        self.key, self.model = key, model
        self.outcomes: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        end = time.monotonic() + MAX_LOAD_SECONDS
        body = {"model": self.model, "max_tokens": 20, "messages": [{"role": "user", "content": "What is 6*7?"}]}
        while not self.stop.is_set() and time.monotonic() < end:
            try:
                r = httpx.post(URL, json=body, headers={"Authorization": f"Bearer {self.key}"}, timeout=120)
                outcome = "200" if r.status_code == 200 else f"http {r.status_code}: {r.text[:120]}"
            except httpx.ConnectError:
                outcome = "refused"
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                outcome = "reset"
            except httpx.TimeoutException:
                outcome = "timeout"
            with self.lock:
                self.outcomes[outcome] += 1

    def answered(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())

    def wait_answered(self, more: int, timeout: float = 180) -> None:
        target, end = self.answered() + more, time.monotonic() + timeout
        while self.answered() < target:
            assert time.monotonic() < end, f"only {self.answered()} answers of {target}: {dict(self.outcomes)}"
            time.sleep(0.1)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        self.wait_answered(CLIENTS)  # every client is in its loop
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(150)


@pytest.fixture
def slow_upstream(box_upstream):
    box_upstream.reset()
    box_upstream.recording.delay(UPSTREAM_SECONDS)
    yield box_upstream
    box_upstream.reset()


def under_load(box, what: str, action) -> collections.Counter:
    """Run `action()` (which restarts the service) under load; the outcomes, recorded."""
    service.wait_healthy(box)
    pid = service.main_pid(box)
    with Load(proxy_key(box)) as load:
        action()
        service.wait_healthy(box, not_pid=pid)
        load.wait_answered(2 * CLIENTS)  # served by the new process too
    record(f"under load, {what}: answers", dict(load.outcomes))
    return load.outcomes


def box_run(box, cmd: str, timeout: float = 600):
    result = box.run(cmd, env=INSTALL_ENV, timeout=timeout)
    assert result.ok, f"`{cmd}` exited {result.rc}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_systemctl_restart_loses_no_request(box, slow_upstream):
    outcomes = under_load(box, "systemctl restart", lambda: box_run(box, f"systemctl restart {SERVICE}"))
    assert set(outcomes) == {"200"}, dict(outcomes)


def test_install_sh_rerun_with_a_change_loses_no_request(box, slow_upstream):
    env = box.root / str(LAYOUT.env_file).lstrip("/")
    original = env.read_text()
    try:
        env.write_text(original + "UPSTREAM_RETRIES=2\n")
        outcomes = under_load(box, "install.sh re-run (env changed)",
                              lambda: box_run(box, "cd /repo && bash ./install.sh", timeout=1500))
        assert set(outcomes) == {"200"}, dict(outcomes)
    finally:
        env.write_text(original)
        box_run(box, "cd /repo && bash ./install.sh", timeout=1500)


def test_runtime_upgrade_and_rollback_lose_no_request(box, slow_upstream):
    runtimes = str(LAYOUT.runtimes)
    current = (box.root / str(LAYOUT.current).lstrip("/")).readlink().name
    previous_link = box.root / str(LAYOUT.previous).lstrip("/")
    previous = previous_link.readlink().name if previous_link.is_symlink() else None
    copy = f"{current}-no-request-lost"
    # A hardlinked copy of the current runtime: a second valid runtime at no download cost.
    box_run(box, f"rm -rf {runtimes}/{copy} && cp -al {runtimes}/{current} {runtimes}/{copy} && touch {runtimes}/{copy}")
    try:
        up = under_load(box, "opsctl runtime upgrade",
                        lambda: box_run(box, f"opsctl runtime upgrade --no-prune {shlex.quote(copy)}"))
        assert set(up) == {"200"}, dict(up)
        back = under_load(box, "opsctl runtime rollback", lambda: box_run(box, "opsctl runtime rollback"))
        assert set(back) == {"200"}, dict(back)
    finally:
        if (box.root / str(LAYOUT.current).lstrip("/")).readlink().name != current:
            box.run("opsctl runtime rollback", timeout=600)
        box.run(f"rm -rf {runtimes}/{copy}")
        box.run(f"ln -sfn runtimes/{previous} {LAYOUT.previous}" if previous else f"rm -f {LAYOUT.previous}")
        service.wait_healthy(box)


def test_kill_9_refuses_no_connection(box, slow_upstream):
    def kill():
        service.kill_and_recover(box)

    outcomes = under_load(box, "kill -9", kill)
    # The killed process's own requests die with it (at most one per client); new connections
    # wait on the socket for the restarted process.
    assert "refused" not in outcomes, dict(outcomes)
    lost = sum(n for k, n in outcomes.items() if k != "200")
    assert lost <= CLIENTS and set(outcomes) <= {"200", "reset"}, dict(outcomes)


def test_a_refused_configuration_stops_the_socket_instead_of_looping(box, restore_env):
    env = box.root / str(LAYOUT.env_file).lstrip("/")
    env.write_text(env.read_text() + "OPTILLM_APPROACH=proxy\n")
    service.reset_start_limit(box)
    assert not box.run(f"systemctl restart {SERVICE}", timeout=120).ok
    deadline = time.monotonic() + 60
    while box.run(f"systemctl is-active {SERVICE}.socket").stdout.strip() == "active":
        assert time.monotonic() < deadline, "the socket is still listening after the refusal"
        time.sleep(0.2)
    # Nothing listens any more: a client is refused at once instead of starting the service again.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{LISTEN_PORT}/health", timeout=5)
    why = service.wait_settled_failed(box, 60)
    assert not why, f"the refused service could still start again: {why}"
    refusals = service.journal(box, 200).count("optillm-proxy-launcher: refused: OPTILLM_APPROACH")
    assert refusals == 1, f"the refused service was started {refusals} times"
    assert service.show(box, "ExecMainStatus")["ExecMainStatus"] == "78"
    assert service.n_restarts(box) == 0


@pytest.fixture
def restore_env(box):
    env = box.root / str(LAYOUT.env_file).lstrip("/")
    original = env.read_text()
    yield
    env.write_text(original)
    service.reset_start_limit(box)
    box.run(f"systemctl reset-failed {SERVICE}.socket")
    # Starting the service starts its socket again (Requires=).
    box_run(box, f"systemctl start {SERVICE}", timeout=120)
    service.wait_healthy(box)
    assert box.run(f"systemctl is-active {SERVICE}.socket").stdout.strip() == "active"


def test_no_secret_in_environ_cmdline_journal_or_systemctl_show(box, box_upstream):
    keys = [proxy_key(box), box.upstream_key]
    pid = service._host_pid(box, service.main_pid(box))
    exposed = {
        "environ": open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"),
        "cmdline": open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"),
        "journal": box.run(f"journalctl -u {SERVICE} --no-pager -o verbose -n 2000").stdout,
        "systemctl show": box.run(f"systemctl show {SERVICE} {SERVICE}.socket").stdout,
        "env file": (box.root / str(LAYOUT.env_file).lstrip("/")).read_text(),
    }
    leaks = [f"{where}" for where, text in exposed.items() for key in keys if key in text]
    assert leaks == [], f"a key is visible in: {leaks}"
    assert "OPENAI_API_KEY" not in exposed["environ"]


def test_socket_unit_is_scored_in_the_box(box):
    out = box.run(f"systemd-analyze security --no-pager {SERVICE}.socket").stdout
    record("systemd-analyze security optillm-proxy.socket (in the box)", out.strip().splitlines()[-1] if out else "")
    service_out = box.run(f"systemd-analyze security --no-pager {SERVICE}").stdout
    score = float(service_out.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 0.9, service_out[-2000:]



def test_at_a_memory_bound_the_kernel_kills_systemd_restarts_and_the_journal_says_so(box, box_upstream):
    """What happens at the unit's memory bound. Inside this box MemoryMax= is set but not enforced
    (the host is cgroup v1 and the container sees the memory controller read-only), so the test
    puts the same kind of bound on the service from the host: a v1 memory cgroup holding its main
    process (64 MiB for new allocations), then 4 MiB request bodies read at once until it overruns.
    The kernel's OOM killer ends the process, systemd logs the kill and restarts it, and the
    socket keeps the port meanwhile."""
    import secrets
    from pathlib import Path

    root = Path("/sys/fs/cgroup/memory")
    if not (root / "cgroup.procs").exists():
        pytest.fail("no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory on this host: the bound "
                    "cannot be set from outside the box (on a cgroup v2 host, MemoryMax= is enforced in it)")
    group = root / f"optillm-proxy-oom-test-{secrets.token_hex(4)}"
    group.mkdir()
    pid = service.main_pid(box)
    restarts = service.n_restarts(box)
    try:
        (group / "memory.limit_in_bytes").write_text(str(64 * 1024 * 1024))
        (group / "cgroup.procs").write_text(str(service._host_pid(box, pid)))
        body = ('{"model": "cepo-jerry-xl", "messages": [{"role": "user", "content": "'
                + "x" * (4 * 1024 * 1024 - 200) + '"}]}').encode()

        def big():
            try:
                httpx.post(URL, content=body, timeout=60, headers={
                    "Authorization": f"Bearer {proxy_key(box)}", "Content-Type": "application/json"})
            except httpx.HTTPError:
                pass  # the process that held it was killed: that is the point

        deadline = time.monotonic() + 120
        while service.n_restarts(box) == restarts and time.monotonic() < deadline:
            threads = [threading.Thread(target=big) for _ in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
        oom = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
        assert int(oom.get("oom_kill", "0")) >= 1, f"the kernel's OOM killer never ran: {oom}"
        assert service.n_restarts(box) > restarts, "systemd did not restart the killed service"
        service.wait_healthy(box, not_pid=pid)
        journal = box.run(f"journalctl -u {SERVICE} --no-pager -n 200 -o cat").stdout
        assert "Main process exited, code=killed, status=9/KILL" in journal, journal[-3000:]
        record("memory bound (64 MiB new allocations, from the host): OOM kills", oom.get("oom_kill"))
    finally:
        for leftover in (group / "cgroup.procs").read_text().split():
            (root / "cgroup.procs").write_text(leftover)
        group.rmdir()
        service.wait_healthy(box)
