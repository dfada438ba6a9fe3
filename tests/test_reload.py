"""The reload handoff with the real launcher and real optillm 0.3.12 (lean runtime).

systemd-socket-activate hands the launcher its listening socket as optillm-proxy.socket would; the
test plays ExecReload='s part by calling the helper in-process (as root, like `+`) with the
environment systemd would give it. The same under a real systemd: tests/test_box_reload.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import threading
import time

import httpx
import pytest

from optillm_proxy_launcher import reload
from tests.fixtures.runtime import UPSTREAM_KEY, free_port
from tests.prerequisites import require_root
from tests.test_serving import KEY, Activated, chat

pytestmark = pytest.mark.real


def helper(tmp_path, run_dir, env: dict, proxy_key: str, upstream_key: str, capsys) -> tuple[int, str]:
    keys = {"api-key": tmp_path / "new-api-key", "upstream-key": tmp_path / "new-upstream-key"}
    keys["api-key"].write_text(proxy_key + "\n")
    keys["upstream-key"].write_text(upstream_key + "\n")
    environ = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "RUNTIME_DIRECTORY": str(run_dir),
               "MAINPID": "1", **env}
    code = reload.helper_main(environ, {k: str(v) for k, v in keys.items()})
    return code, capsys.readouterr().out


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited launcher's parent may not have reaped it yet)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def control_socket_owner(run_dir) -> int:
    """The PID listening on the control socket's name (SO_PEERCRED), as a next helper would reach it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(run_dir / reload.CONTROL_SOCKET_NAME))
        return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]


def status(port: int, model: str, key: str = KEY) -> int:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}]},
                      timeout=60).status_code


def test_a_reload_serves_new_requests_while_the_old_process_finishes_its_own(lean_runtime, upstream, tmp_path,
                                                                              capsys):
    require_root("the reload helper's peer check", "run as root, as ExecReload=+ does")
    port = free_port()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    server = Activated(lean_runtime, tmp_path, upstream.base_url, listen=f"127.0.0.1:{port}", port=port,
                       RUNTIME_DIRECTORY=str(run_dir), PROXY_APPROACHES="moa,bon")
    new_pid = None
    try:
        assert chat(port, "jerry-xl") == 200
        assert status(port, "bon-jerry-xl") == 200
        old_pid = server.proc.pid  # systemd-socket-activate execs the launcher in place
        # One slow request in flight in the old process.
        before = len(upstream.calls())
        upstream.delay(600)
        slow: list = []
        slow_thread = threading.Thread(target=lambda: slow.append(chat(port, "jerry-xl", timeout=120)))
        slow_thread.start()
        deadline = time.monotonic() + 30
        while len(upstream.calls()) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(upstream.calls()) == before + 1
        upstream.delay(0)  # later calls answer at once; the held one waits for the reset below

        new_key = "opx-reloaded-key-abcdefghijklmnop"
        code, out = helper(tmp_path, run_dir, {"PROXY_APPROACHES": "moa"}, new_key, "rotated-upstream-key", capsys)
        assert code == 0, out
        new_pid = int(re.search(r"PID (\d+) serves the new configuration", out).group(1))
        assert new_pid != old_pid
        # `done` came once the new one held the control socket's name: a reload right now reaches it.
        assert control_socket_owner(run_dir) == new_pid
        assert [p.name for p in run_dir.iterdir()] == [reload.CONTROL_SOCKET_NAME]

        # New requests are answered by the new process while the old one still holds the slow one.
        answers = [status(port, "jerry-xl", new_key) for _ in range(5)]
        assert answers == [200] * 5
        assert slow == [] and server.proc.poll() is None  # still in flight, in the old process
        # The new configuration: new proxy key only, bon- no longer allowed, the new upstream key.
        assert status(port, "jerry-xl", KEY) == 401
        assert status(port, "bon-jerry-xl", new_key) == 400
        assert upstream.calls()[-1]["authorization"] == "Bearer rotated-upstream-key"

        upstream.reset()  # the held call answers
        slow_thread.join(60)
        assert slow == [200]
        assert server.proc.wait(60) == 0  # the old process drained and exited
        log = server.log()
        assert f"reloaded: PID {new_pid} serves new connections; draining 1 request(s)" in log
        assert "drained: every request in flight was answered" in log
        # The new launcher's in-process /health probe was counted out again: nothing is in flight.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert re.search(r"^optillm_proxy_requests_in_flight 0\.0$", metrics, re.M), metrics[-3000:]

        # A change the launcher refuses: the reload fails, the running process serves on unchanged.
        code, out = helper(tmp_path, run_dir, {"PROXY_PLUGINS": "no-such-plugin"}, new_key, UPSTREAM_KEY, capsys)
        assert code == 1
        assert "refused, the running process serves on unchanged: PROXY_PLUGINS names unknown plugin" in out
        assert status(port, "jerry-xl", new_key) == 200
        assert upstream.calls()[-1]["authorization"] == "Bearer rotated-upstream-key"
        os.kill(new_pid, 0)  # still the one serving

        # A second reload, from the launcher the first one started: the handoff repeats.
        code, out = helper(tmp_path, run_dir, {"PROXY_APPROACHES": "moa,bon"}, new_key, UPSTREAM_KEY, capsys)
        assert code == 0, out
        third_pid = int(re.search(r"PID (\d+) serves the new configuration", out).group(1))
        assert third_pid != new_pid
        # And another at once, as install.sh after `opsctl key rotate` does: no pause between them.
        code, out = helper(tmp_path, run_dir, {"PROXY_APPROACHES": "moa,bon"}, new_key, UPSTREAM_KEY, capsys)
        assert code == 0, out
        fourth_pid = int(re.search(r"PID (\d+) serves the new configuration", out).group(1))
        assert control_socket_owner(run_dir) == fourth_pid
        assert status(port, "bon-jerry-xl", new_key) == 200
        for pid in (new_pid, third_pid):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and running(pid):
                time.sleep(0.1)
            assert not running(pid), f"PID {pid} did not exit after its drain"
        new_pid = fourth_pid
        assert "Traceback" not in server.log()
    finally:
        upstream.reset()
        if new_pid:
            try:
                os.kill(new_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.stop()
