"""`systemctl reload optillm-proxy` in the booted box (real systemd, real LiteLLM): a new launcher takes
the socket over and serves while the old one finishes its requests in flight.

One slow request is held at the recording upstream (behind the real LiteLLM) while the reload runs
under a load of moa clients: every client request is answered 200 (none refused or reset), new
requests are answered while the slow one is still in flight, the slow one then ends 200 in the old
process; MainPID changes, NRestarts does not. The changed env file and upstream key take effect;
a configuration the launcher refuses fails the reload, names the reason in the journal and leaves
the running process serving unchanged. Outcomes and order are asserted, never durations.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ops.from_launcher.layout import BASE_MODEL, DEFAULT as LAYOUT, LISTEN_PORT, SERVICE
from tests.box import service
from tests.fixtures.box import record
from tests.test_box_no_request_lost import Load, proxy_key

pytestmark = pytest.mark.box

URL = f"http://127.0.0.1:{LISTEN_PORT}/v1/chat/completions"


def chat(key: str, model: str = BASE_MODEL, timeout: float = 120) -> int:
    return httpx.post(URL, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                      json={"model": model, "max_tokens": 20,
                            "messages": [{"role": "user", "content": "What is 6*7?"}]}).status_code


def box_file(box, path) -> "object":
    return box.root / str(path).lstrip("/")


def resident_mib(box, box_pid: int) -> int:
    with open(f"/proc/{service._host_pid(box, box_pid)}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


@pytest.fixture
def restore_config(box):
    env, upstream_key = box_file(box, LAYOUT.env_file), box_file(box, LAYOUT.upstream_key_file)
    saved = env.read_text(), upstream_key.read_text()
    yield env, upstream_key
    env.write_text(saved[0])
    upstream_key.write_text(saved[1])
    service.reset_start_limit(box)
    # install.sh applies and records it: the tests after these find the box as install.sh left it.
    from tests.box.install import install

    install(box, timeout=900)
    service.wait_healthy(box)


def reload(box):
    return box.run(f"systemctl reload {SERVICE}", timeout=180)


def test_a_reload_hands_over_without_a_pause_and_applies_env_and_key(box, box_upstream, restore_config):
    env, upstream_key = restore_config
    key = proxy_key(box)
    service.reset_start_limit(box)
    service.wait_healthy(box)
    before_pid, before_restarts = service.main_pid(box), service.n_restarts(box)
    assert chat(key, f"bon-{BASE_MODEL}") == 200  # allowed before the change

    box_upstream.reset()
    box_upstream.recording.delay(600)  # held until the reset below
    slow: list = []
    slow_thread = threading.Thread(target=lambda: slow.append(chat(key, timeout=300)))
    slow_thread.start()
    deadline = time.monotonic() + 60
    while not box_upstream.calls() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(box_upstream.calls()) == 1, "the slow request never reached the upstream"
    box_upstream.recording.delay(0)  # later calls answer at once

    env.write_text(env.read_text() + "PROXY_APPROACHES=moa\n")
    with Load(key) as load:
        result = reload(box)
        assert result.ok, f"systemctl reload failed:\n{result.stdout}\n{result.stderr}\n{service.journal(box, 40)}"
        load.wait_answered(16)  # answered after the reload, by the new process
        new_pid = service.main_pid(box)
        health = box.run("opsctl health")
        resident = (resident_mib(box, before_pid), resident_mib(box, new_pid))
        during = dict(load.outcomes)
        assert slow == [], "the slow request ended before the new requests were answered"
    record("reload under 8 moa clients, one slow request held: answers", dict(load.outcomes))
    record("reload: VmRSS MiB of the old (draining) and the new launcher", resident)
    assert set(load.outcomes) == {"200"}, dict(load.outcomes)
    assert sum(during.values()) >= 16
    assert new_pid != before_pid
    assert service.n_restarts(box) == before_restarts
    assert health.rc == 0, health.stdout  # the new process answers: OK, never CRITICAL

    # The env file's change took effect: bon- is no longer allowed, moa still is.
    assert chat(key, f"bon-{BASE_MODEL}") == 400
    assert chat(key, f"moa-{BASE_MODEL}") == 200

    box_upstream.reset()  # the held call answers; the old process finishes it
    slow_thread.join(120)
    assert slow == [200]
    journal = service.journal(box, 5000)  # optillm logs several lines per request since the reload
    assert f"reloaded: PID {new_pid} serves new connections; draining" in journal
    # systemd adopted the new launcher as its own child: it drains it on the next stop, not SIGKILL.
    assert "not our child" not in journal
    assert "drained: every request in flight was answered" in journal

    # A rotated upstream key takes effect: LiteLLM refuses a key it does not know, then accepts its own.
    good = upstream_key.read_text()
    upstream_key.write_text("opx-a-key-litellm-does-not-know-0123456789\n")
    assert reload(box).ok
    calls = len(box_upstream.calls())
    assert chat(key) != 200
    assert len(box_upstream.calls()) == calls  # LiteLLM refused it: nothing reached the model
    upstream_key.write_text(good)
    assert reload(box).ok
    assert chat(key) == 200

    # A configuration the launcher refuses: the reload fails with the reason, the process serves on.
    serving_pid = service.main_pid(box)
    env.write_text(env.read_text() + "PROXY_PLUGINS=no-such-plugin\n")
    refused = reload(box)
    assert not refused.ok
    assert service.main_pid(box) == serving_pid
    assert "optillm-proxy-reload: refused, the running process serves on unchanged: PROXY_PLUGINS names unknown " \
           "plugin 'no-such-plugin'" in service.journal(box, 200)
    assert chat(key, f"moa-{BASE_MODEL}") == 200 and chat(key, f"bon-{BASE_MODEL}") == 400
    assert service.show(box, "ActiveState")["ActiveState"] == "active"
    assert service.n_restarts(box) == before_restarts


def test_install_sh_applies_an_env_change_by_a_reload_and_a_rerun_changes_nothing(box, box_upstream, restore_config):
    """install.sh's restart step asks ops/runtime/service.py: an env-file change on a running service
    is a reload (MainPID changes, NRestarts does not); the reload recorded what the service runs
    with, so a plain re-run changes nothing; a change it refuses exits 6 and leaves it serving."""
    from tests.box.install import assert_rerun_changes_nothing, install
    from tests.box.machine import INSTALL_ENV

    env, _ = restore_config
    key = proxy_key(box)
    service.reset_start_limit(box)
    service.wait_healthy(box)
    before_pid, before_restarts = service.main_pid(box), service.n_restarts(box)
    env.write_text(env.read_text() + "PROXY_APPROACHES=moa\n")
    install(box, timeout=900)
    output = box.last_install_output
    assert "reloaded (changed: env-file)" in output, output[-3000:]
    assert service.main_pid(box) != before_pid and service.n_restarts(box) == before_restarts
    assert chat(key, f"bon-{BASE_MODEL}") == 400 and chat(key, f"moa-{BASE_MODEL}") == 200
    assert_rerun_changes_nothing(box, "install.sh's reload")

    # A change the launcher refuses: install.sh exits 6 and the running process serves on.
    serving_pid = service.main_pid(box)
    env.write_text(env.read_text() + "MAX_N=0\n")
    refused = box.run("cd /repo && bash ./install.sh", env=INSTALL_ENV, timeout=900)
    assert refused.rc == 6, refused.stdout[-3000:] + refused.stderr[-2000:]
    assert service.main_pid(box) == serving_pid and chat(key, f"moa-{BASE_MODEL}") == 200
