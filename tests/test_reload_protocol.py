"""The reload handoff's protocol (launcher/optillm_proxy_launcher/reload.py), with the processes mocked.

The real launcher's handoff is proven in tests/test_reload.py, under systemd in tests/test_box_reload.py.
"""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from optillm_proxy_launcher import reload, serving
from optillm_proxy_launcher.notify import Notifier

LAUNCHER = Path(__file__).resolve().parents[1] / "launcher" / "optillm-proxy-launcher.py"
PROXY_KEY, UPSTREAM = "opx-reload-test-key-0123456789", "upstream-key-for-reload"
GOOD_ENV = {"PATH": "/usr/bin:/bin", "PROXY_PLUGINS": "none", "PROXY_APPROACHES": "moa"}


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[str] = []

    def send(self, message: str) -> bool:
        super().send(message)
        self.sent.append(message)
        return True


def launch(tmp_path: Path, listen_fd: int = 99) -> reload.Launch:
    return reload.Launch([sys.executable, "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port", "4020",
                          "--base-url", "http://127.0.0.1:4000/v1"],
                         {"HOME": "/var/lib/optillm-proxy", "JOURNAL_STREAM": "8:1", "PROXY_APPROACHES": "bon",
                          "RUNTIME_DIRECTORY": str(tmp_path)}, listen_fd, "/run/systemd/notify", "20000000")


def message(env: dict | None = None, proxy_key: str = PROXY_KEY) -> dict:
    return {"environment": {**GOOD_ENV, **(env or {})},
            "credentials": {"api-key": proxy_key + "\n", "upstream-key": UPSTREAM + "\n"}}


class FakeChild:
    """A new launcher: reads the handoff from its pipe, answers with `answer` (or exits), waits for go,
    then says `serving` once `serve` is set (the real one: once it serves and holds the socket's name)."""

    def __init__(self, argv, env, pass_fds, close_fds, answer="ready", serve=None):
        self.argv, self.env, self.pid, self.returncode = argv, env, 4242, None
        self.serve = serve if serve is not None else threading.Event()
        if serve is None:
            self.serve.set()
        value = argv[argv.index(reload.HANDOFF_OPTION) + 1]
        r, w = (int(x) for x in value.split(","))
        self.from_parent, self.to_parent = os.dup(r), os.dup(w)
        self.handed, self.got, self.answer = None, None, answer
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        reader = reload.LineReader(self.from_parent)
        self.handed = json.loads(reader.read(5)[0])
        if self.answer is None:
            self.returncode = 78
            os.close(self.to_parent)
        else:
            if self.answer != "ready":
                self.returncode = 78
            reload.send_line(self.to_parent, {"state": self.answer, "message": "PROXY_X refused here"})
            if self.answer == "ready":
                self.got = reader.read(5)[0]
                if self.got and json.loads(self.got) == {"state": "go"} and self.serve.wait(5):
                    reload.send_line(self.to_parent, {"state": "serving"})
        self.done.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        return self.returncode

    def kill(self):
        self.returncode = -9


def control(tmp_path, answer="ready", memory=lambda: None, commit=True, serve=None):
    notifier = RecordingNotifier()
    notifier.send("READY=1\nSTATUS=serving before")
    children: list[FakeChild] = []

    def spawn(argv, **kw):
        child = FakeChild(argv, answer=answer, serve=serve, **kw)
        children.append(child)
        return child

    def request_switch(switch):
        assert switch.alive()
        if commit:
            switch.commit()

    c = reload.Control(launch(tmp_path), notifier, request_switch, lambda: False, memory=memory, spawn=spawn)
    return c, notifier, children


def test_a_good_change_starts_a_new_launcher_hands_over_and_makes_it_main(tmp_path):
    c, notifier, children = control(tmp_path)
    said: list[str] = []
    outcome, switch = c.reload(message(), said.append)
    assert switch.committed.is_set()
    [child] = children
    assert "PID 4242 serves the new configuration" in outcome
    # The keys went through the pipe, never argv or the environment.
    assert child.handed["credentials"] == {"api-key": PROXY_KEY + "\n", "upstream-key": UPSTREAM + "\n"}
    assert child.handed["listen_fd"] == 99 and child.handed["notify_socket"] == "/run/systemd/notify"
    assert PROXY_KEY not in " ".join(child.argv) and PROXY_KEY not in json.dumps(child.env)
    # Same ExecStart arguments; the env file's new values; per-process variables from the running one.
    assert child.argv[:9] == c.launch.command and child.argv[9] == reload.HANDOFF_OPTION
    assert child.env["PROXY_APPROACHES"] == "moa" and child.env["JOURNAL_STREAM"] == "8:1"
    assert child.env["HOME"] == "/var/lib/optillm-proxy"
    assert notifier.sent[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert notifier.sent[2].startswith("MAINPID=4242\nREADY=1\nSTATUS=reloaded")
    assert child.done.wait(5)
    assert json.loads(child.got) == {"state": "go"}


def children_said_go(children: list, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if children and children[0].got:
            return json.loads(children[0].got) == {"state": "go"}
        time.sleep(0.01)
    return False


def test_done_waits_until_the_new_launcher_serves_and_holds_the_control_socket(tmp_path):
    """The answer the helper gets is the moment a next reload reaches the new process: not before the
    new one says `serving` (it renames its control socket over the name first)."""
    serve = threading.Event()
    c, notifier, children = control(tmp_path, serve=serve)
    outcome: list[str] = []
    t = threading.Thread(target=lambda: outcome.append(c.reload(message(), lambda _: None)[0]))
    t.start()
    assert children_said_go(children, 10)  # committed: MAINPID sent, go sent
    assert notifier.sent[-1].startswith("MAINPID=4242")
    t.join(0.3)
    assert t.is_alive() and outcome == []  # but no `done` while the new one has not said `serving`
    serve.set()
    t.join(5)
    assert outcome and "PID 4242 serves the new configuration" in outcome[0]


def test_a_new_launcher_silent_after_go_is_still_main_and_the_helper_is_told(tmp_path, monkeypatch):
    monkeypatch.setattr(reload, "SWITCH_SECONDS", 0.3)
    never = threading.Event()
    c, notifier, children = control(tmp_path, serve=never)
    said: list[str] = []
    assert "PID 4242 serves" in c.reload(message(), said.append)[0]
    assert "PID 4242 is main but has not said it serves" in said[-1]


def test_a_refused_new_launcher_leaves_no_private_socket_name_behind(tmp_path):
    staging = reload.staging_path(tmp_path / reload.CONTROL_SOCKET_NAME, 4242)
    staging.write_text("")  # what the new launcher bound before it was refused
    c, notifier, children = control(tmp_path, answer="refused")
    with pytest.raises(reload.ReloadRefused):
        c.reload(message(), lambda _: None)
    assert not staging.exists()


def test_a_control_socket_is_named_only_when_published(tmp_path):
    c, notifier, children = control(tmp_path)
    path = tmp_path / reload.CONTROL_SOCKET_NAME
    c.bind(path)
    assert not path.exists() and reload.staging_path(path, os.getpid()).exists()
    c.publish()
    assert path.exists() and not reload.staging_path(path, os.getpid()).exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    c.stop_listening()


def test_stop_listening_ends_the_accept_loop_and_resets_what_waits(tmp_path):
    c, notifier, children = control(tmp_path)
    path = tmp_path / reload.CONTROL_SOCKET_NAME
    c.bind(path)
    c.publish()
    loop = threading.Thread(target=c.serve)
    c.busy.acquire()  # a reload in progress: a queued helper would be refused
    loop.start()
    c.stop_listening()
    loop.join(5)
    assert not loop.is_alive()  # close() alone leaves accept() blocked until the process exits
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(ConnectionRefusedError):
        s.connect(str(path))


@pytest.mark.parametrize("env, proxy_key, why", [
    ({"PROXY_PLUGINS": "no-such-plugin"}, PROXY_KEY, "PROXY_PLUGINS names unknown plugin 'no-such-plugin'"),
    ({"OPTILLM_APPROACH": "proxy"}, PROXY_KEY, "OPTILLM_APPROACH set in the environment"),
    ({"MAX_N": "0"}, PROXY_KEY, "MAX_N=0 is out of range"),
    ({}, "sk-abcdefghijklmnop", "starts with sk-"),
    ({}, "", "credential /etc/optillm-proxy/api-key is empty"),
])
def test_what_a_start_refuses_a_reload_refuses_before_starting_anything(tmp_path, env, proxy_key, why):
    c, notifier, children = control(tmp_path)
    with pytest.raises(reload.ReloadRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        c.reload(message(env, proxy_key), lambda _: None)
    assert children == []
    assert notifier.sent == ["READY=1\nSTATUS=serving before"]  # systemd was told nothing


def test_a_new_launcher_that_refuses_leaves_the_old_one_serving(tmp_path):
    c, notifier, children = control(tmp_path, answer="refused")
    with pytest.raises(reload.ReloadRefused, match="PROXY_X refused here"):
        c.reload(message(), lambda _: None)
    assert not any(m.startswith("MAINPID") for m in notifier.sent)
    assert notifier.sent[-1] == "READY=1\nSTATUS=serving before"  # the status it had is back


def test_a_new_launcher_that_dies_before_ready_is_a_refusal(tmp_path):
    c, notifier, children = control(tmp_path, answer=None)
    with pytest.raises(reload.ReloadRefused, match="the new launcher exited before it was ready"):
        c.reload(message(), lambda _: None)
    assert not any(m.startswith("MAINPID") for m in notifier.sent)


def test_a_switch_the_serving_loop_never_makes_is_refused_and_the_child_ended(tmp_path, monkeypatch):
    monkeypatch.setattr(reload, "SWITCH_SECONDS", 0.2)
    c, notifier, children = control(tmp_path, commit=False)
    with pytest.raises(reload.ReloadRefused, match="did not switch"):
        c.reload(message(), lambda _: None)
    assert children[0].returncode == -9
    assert not any(m.startswith("MAINPID") for m in notifier.sent)


def test_too_little_memory_for_two_launchers_is_refused_with_the_restart_advice(tmp_path):
    c, notifier, children = control(tmp_path, memory=lambda: "past MemoryHigh: apply it with systemctl restart")
    with pytest.raises(reload.ReloadRefused, match="systemctl restart"):
        c.reload(message(), lambda _: None)
    assert children == []


def cgroup(tmp_path, current: str, high: str) -> tuple[Path, Path]:
    root = tmp_path / "cg"
    unit = root / "system.slice" / "optillm-proxy.service"
    unit.mkdir(parents=True)
    (unit / "memory.current").write_text(current + "\n")
    (unit / "memory.high").write_text(high + "\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/optillm-proxy.service\n")
    return root, proc


def test_memory_headroom_from_the_cgroup(tmp_path):
    mib = 1 << 20
    root, proc = cgroup(tmp_path, str(1200 * mib), str(1536 * mib))
    why = reload.memory_problem(root, proc, lambda: 1100 * mib)
    assert why.startswith("the service uses 1200 MiB and a second launcher needs about 1100 MiB")
    assert "MemoryHigh=1536 MiB" in why and "systemctl restart optillm-proxy" in why
    assert reload.memory_problem(root, proc, lambda: 170 * mib) is None  # lean fits


def test_no_enforced_memory_bound_means_no_refusal(tmp_path):
    root, proc = cgroup(tmp_path, "5000000000", "max")
    assert reload.memory_problem(root, proc, lambda: 1 << 30) is None
    v1 = tmp_path / "v1"
    v1.write_text("12:memory:/system.slice/x\n1:name=systemd:/system.slice/x\n")
    assert reload.memory_problem(root, v1, lambda: 1 << 30) is None


@hsettings(max_examples=40, deadline=None)
@given(running=st.dictionaries(st.sampled_from([*reload.KEPT_FROM_THE_RUNNING_PROCESS, "PROXY_APPROACHES", "A"]),
                               st.text(max_size=5), max_size=6),
       fresh=st.dictionaries(st.sampled_from([*reload.NOT_INHERITED, *reload.KEPT_FROM_THE_RUNNING_PROCESS,
                                              "PROXY_APPROACHES", "B", "PATH"]), st.text(max_size=5), max_size=8))
def test_the_new_environment_is_the_units_new_one_with_the_running_processes_own(running, fresh):
    env = reload.compose_environment(running, fresh)
    for name, value in env.items():
        if name in reload.KEPT_FROM_THE_RUNNING_PROCESS:
            assert running[name] == value
        else:
            assert fresh[name] == value  # only what systemd computed for the reload (a removed line stays removed)
    assert not set(env) & set(reload.NOT_INHERITED)
    assert {k for k in fresh if k not in reload.NOT_INHERITED and k not in reload.KEPT_FROM_THE_RUNNING_PROCESS} <= set(env)


def test_the_helper_hands_keys_over_the_socket_and_exits_by_the_outcome(tmp_path, capsys):
    keys = {"api-key": tmp_path / "api-key", "upstream-key": tmp_path / "upstream-key"}
    for name, path in keys.items():
        path.write_text(f"{name}-value\n")
    path = tmp_path / reload.CONTROL_SOCKET_NAME
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    received = {}

    def answer(outcome):
        conn, _ = server.accept()
        with conn:
            received.update(reload.read_message(conn))
            reload.send_line(conn, {"outcome": "progress", "message": "started a new launcher, PID 7"})
            reload.send_line(conn, {"outcome": outcome, "message": "because"})

    for outcome, code in (("done", 0), ("refused", 1)):
        t = threading.Thread(target=answer, args=(outcome,))
        t.start()
        assert reload.helper_main({"RUNTIME_DIRECTORY": str(tmp_path), "PROXY_APPROACHES": "moa"},
                                  {k: str(v) for k, v in keys.items()}) == code
        t.join(5)
        assert received["credentials"] == {"api-key": "api-key-value\n", "upstream-key": "upstream-key-value\n"}
        assert received["environment"]["PROXY_APPROACHES"] == "moa"
    out = capsys.readouterr().out
    assert "optillm-proxy-reload: started a new launcher, PID 7" in out
    assert "optillm-proxy-reload: reloaded: because" in out
    assert "optillm-proxy-reload: refused, the running process serves on unchanged: because" in out
    assert "api-key-value" not in out
    server.close()


def test_the_helper_says_what_to_do_when_no_launcher_answers(tmp_path, capsys):
    keys = tmp_path / "k"
    keys.write_text("x\n")
    code = reload.helper_main({"RUNTIME_DIRECTORY": str(tmp_path)}, {"api-key": str(keys), "upstream-key": str(keys)})
    assert code == reload.EX_UNREACHABLE
    assert "systemctl restart optillm-proxy" in capsys.readouterr().out


def test_the_control_socket_answers_root_and_refuses_a_second_reload_at_once(tmp_path):
    c, notifier, children = control(tmp_path)
    path = tmp_path / reload.CONTROL_SOCKET_NAME
    c.start(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    c.busy.acquire()  # a reload in progress
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(json.dumps(message()).encode())
        s.shutdown(socket.SHUT_WR)
        answer = json.loads(s.makefile().readline())
    assert answer == {"outcome": "refused", "message": "another reload is running: wait for it to finish"}
    c.busy.release()


def test_the_handoff_option_is_taken_out_and_its_payload_read():
    r, w = os.pipe()
    back_r, back_w = os.pipe()
    reload.send_line(w, {"credentials": {"api-key": "k"}, "listen_fd": 3, "notify_socket": None,
                         "watchdog_usec": "20000000"})
    handoff, rest = reload.take_handoff(["--host", "127.0.0.1", reload.HANDOFF_OPTION, f"{r},{back_w}", "--port", "1"])
    assert rest == ["--host", "127.0.0.1", "--port", "1"]
    assert handoff.credentials == {"api-key": "k"} and handoff.listen_fd == 3
    reload.send_line(w, {"state": "go"})
    assert handoff.ready_and_wait(2) is True
    assert json.loads(os.read(back_r, 100)) == {"state": "ready"}
    os.close(w)
    assert handoff.ready_and_wait(2) is False  # the old one went away
    assert reload.take_handoff(["--port", "1"]) == (None, ["--port", "1"])


def test_the_serving_loop_takes_a_switch_only_while_its_child_lives():
    switching = serving.Switching()
    woke = []
    switching.wake = lambda: woke.append(1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    switch = reload.Switch(child, -1, lambda m: True)
    switching.request(switch)
    assert woke and switching.requested.is_set()
    assert switching.take() is switch and not switching.requested.is_set()
    assert not switch.alive()


def test_a_helper_that_only_stops_writing_is_waited_for_one_that_closes_is_gone():
    r, w = os.pipe()
    mine, helpers = socket.socketpair()
    helpers.shutdown(socket.SHUT_WR)  # what the helper does after its message: it still waits
    assert reload.LineReader(r).read(0.2, mine.fileno()) == (None, False)
    helpers.close()  # systemd's reload timeout killed it
    assert reload.LineReader(r).read(5, mine.fileno()) == (None, True)
    os.write(w, b'{"state": "ready"}\n')
    assert reload.LineReader(r).read(5) == ('{"state": "ready"}', False)
    mine.close()
    os.close(w)
    os.close(r)


def test_the_new_launcher_is_started_detached_never_as_a_child_of_the_old_one(tmp_path):
    """systemd drains a main process it can reap: the new launcher must not be ours but PID 1's
    (a child of the old launcher is "not our child" to systemd, SIGKILLed at once on the next stop)."""
    out = tmp_path / "ppid"
    child = reload.spawn_detached([sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(str(os.getppid()))"],
                                  env=dict(os.environ))
    assert child.pid != os.getpid()
    child.wait(30)
    assert child.poll() is not None
    assert int(out.read_text()) != os.getpid()


def test_every_reload_message_the_docs_explain_is_one_the_code_writes():
    """docs/serving.md#messages-of-a-reload: each message's fixed words are in the helper's or the
    running launcher's code (a reworded message fails here until its row is)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    table = doc.split("### Messages of a reload", 1)[1].split("\n### ", 1)[0]
    code = Path(reload.__file__).read_text()
    messages = [row.split("`")[1] for row in table.splitlines() if row.startswith("| `")]
    assert len(messages) >= 10
    placeholder = re.compile(r"\.\.\.|<[^>]*>|\bPID [NM]\b|\bN\b|\(\.\.\.\)|/etc/optillm-proxy/|"
                             r"/run/optillm-proxy/control\.sock|optillm-proxy\b|\b\d+ s\b|refused, |refused: ")
    for message in messages:
        for piece in placeholder.split(message):
            piece = piece.strip(" ;:,()")
            if len(piece) >= 8:
                assert piece in code, f"{piece!r} (docs/serving.md, {message!r}) is not in reload.py"


def test_a_drained_old_launcher_ends_the_processes_it_started_and_nothing_else():
    """What its plugins started (here: one that exits on SIGTERM, one that ignores it) ends with it;
    a detached process (the new launcher) is not its child and is left alone. Run in a process of its
    own: end_children() ends every child of the process that calls it (this worker has others)."""
    script = """
import json, os, signal, subprocess, sys, time
from optillm_proxy_launcher import reload
polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                             "print('ok', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
assert stubborn.stdout.readline() == b"ok\\n"  # its SIGTERM handler is in place
detached = reload.spawn_detached([sys.executable, "-c", "import time; time.sleep(60)"], env=dict(os.environ))
ended = reload.end_children(grace=0.5)
print(json.dumps({"ended": ended, "polite": [polite.pid, polite.wait(5)], "stubborn": [stubborn.pid, stubborn.wait(5)],
                  "detached": [detached.pid, detached.poll()]}))
detached.kill()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sorted(result["ended"]) == sorted([result["polite"][0], result["stubborn"][0]])
    assert result["polite"][1] == -15 and result["stubborn"][1] == -9  # SIGTERM, then SIGKILL after the grace
    assert result["detached"][1] is None  # the new launcher runs on
