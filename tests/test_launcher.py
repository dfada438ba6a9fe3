"""launcher/optillm-proxy-launcher.py: key from the credential, refusals, plugin sets, sd_notify.

Refusals happen before optillm is imported, so they run with this interpreter. Everything else
starts real optillm 0.3.12 from the full lock through the launcher (marker `real`), with a
test-owned AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from optillm_proxy_launcher import notify, settings
from tests.fixtures.runtime import launcher_credentials

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launcher" / "optillm-proxy-launcher.py"
PACKAGE = REPO / "launcher" / "optillm_proxy_launcher"
PLUGIN_TABLE = REPO / "launcher" / "plugins.json"
KEY = "opx-launcher-test-key-0123456789abcdefghij"
ALL_SLUGS = sorted(json.loads(PLUGIN_TABLE.read_text())["plugins"])
FAN_OUT = {"jerry-xl": 1, "moa-jerry-xl": 3, "bon-jerry-xl": 4, "plansearch-jerry-xl": 4,
           "self_consistency-jerry-xl": 5}
# Long enough for the full profile with all 16 plugins on a busy 2-core machine.
START_TIMEOUT = 180.0




def write_credentials(directory: Path, key: str = KEY) -> Path:
    return launcher_credentials(directory, key)


class NotifyListener:
    """What systemd's notify socket would receive: datagrams, in order."""

    def __init__(self, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir = None
        if abstract:
            name = f"optillm-proxy-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            # sun_path holds 108 bytes: pytest's tmp paths can be longer.
            self._dir = tempfile.mkdtemp(prefix="ntf-")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.env_value = path
        self.messages: list[str] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(65536).decode()
        except socket.timeout:
            return None
        self.messages.append(message)
        return message

    def wait_for(self, prefix: str, timeout: float, process=None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.proc.poll() is not None:
                raise AssertionError(f"launcher exited with {process.proc.returncode}:\n{process.log_text()[-3000:]}")
            message = self.receive(1.0)
            if message is not None and message.startswith(prefix):
                return message
        raise AssertionError(f"no {prefix!r} datagram within {timeout}s; got {self.messages!r}")

    def close(self) -> None:
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def notify_listener():
    listeners = []

    def make(abstract: bool = False) -> NotifyListener:
        listener = NotifyListener(abstract)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()


def launcher_argv(venv: Path, *extra: str) -> list[str]:
    return [str(venv / "bin" / "python"), "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port", "{port}",
            "--model", "jerry-xl", *extra]


def start_via_launcher(optillm_factory, venv, upstream, tmp_path, *, listener=None, env=None, extra=()):
    creds = write_credentials(tmp_path / f"creds-{uuid.uuid4().hex[:6]}")
    env_extra = {"CREDENTIALS_DIRECTORY": str(creds), **(env or {})}
    if listener is not None:
        env_extra["NOTIFY_SOCKET"] = listener.env_value
    return optillm_factory(venv, upstream.base_url, key=KEY, wait=False, env_extra=env_extra,
                           argv=launcher_argv(venv, "--base-url", upstream.base_url, *extra))


def health_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def loaded_plugins(log: str) -> list[str]:
    return sorted(line.rsplit("Loaded package plugin: ", 1)[1].strip()
                  for line in log.splitlines() if "Loaded package plugin: " in line)


def chat(url: str, model: str, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}],
                            "max_tokens": 50})


# ---------------------------------------------------------------------------------------------
# Refusals: exit 78, one line on stderr, nothing started


def run_launcher(args=(), env=None, launcher=LAUNCHER, cwd=None,
                 base_url=("--base-url", "http://127.0.0.1:9/v1")) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-I", str(launcher), "--host", "127.0.0.1", "--port", "9", *base_url,
                           *args], env={k: v for k, v in {**base, **(env or {})}.items() if v is not None},
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def lean_runtime_copy(root: Path) -> Path:
    """A runtime layout (libexec/ + manifest) recording the lean profile."""
    (root / "libexec").mkdir(parents=True)
    shutil.copy2(LAUNCHER, root / "libexec" / LAUNCHER.name)
    shutil.copytree(PACKAGE, root / "libexec" / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(PLUGIN_TABLE, root / "libexec" / "plugins.json")
    (root / "optillm-proxy-runtime.json").write_text(json.dumps(
        {"profile": "lean", "optillm_version": "0.3.12", "lock_sha256": "0" * 64, "lock_file": "locks/lean.txt"}))
    return root / "libexec" / LAUNCHER.name


REFUSALS = {
    "no credentials directory": ({}, [], "the credential api-key is not loaded"),
    "credential missing": ({"CREDENTIALS_DIRECTORY": "{empty_dir}"}, [], "the credential api-key is not loaded"),
    "credential empty": ({"CREDENTIALS_DIRECTORY": "{creds:}"}, [], "is empty"),
    "sk- key": ({"CREDENTIALS_DIRECTORY": "{creds:sk-abcdef0123456789}"}, [], "starts with sk-"),
    "OPTILLM_API_KEY in env": ({"CREDENTIALS_DIRECTORY": "{creds}", "OPTILLM_API_KEY": "x"}, [],
                               "OPTILLM_API_KEY is set in the environment, which switches optillm 0.3.12 to local inference"),
    "other OPTILLM_ in env": ({"CREDENTIALS_DIRECTORY": "{creds}", "OPTILLM_APPROACH": "proxy"}, [],
                              "OPTILLM_APPROACH set in the environment"),
    "key on command line": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--optillm-api-key", "abc"],
                            "--optillm-api-key is on the command line"),
    "abbreviated key option": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--optillm-api=abc"],
                               "--optillm-api-key is on the command line"),
    "approach proxy": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--approach", "proxy"], "--approach proxy is on the command line"),
    "approach auto": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--approach=auto"], "--approach auto is on the command line"),
    "approach abbreviated": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--appr", "proxy"], "--approach proxy"),
    "unknown plugin": ({"CREDENTIALS_DIRECTORY": "{creds}", "PROXY_PLUGINS": "readurls,nosuch"}, [],
                       "unknown plugin 'nosuch'"),
    "none mixed with names": ({"CREDENTIALS_DIRECTORY": "{creds}", "PROXY_PLUGINS": "none,readurls"}, [],
                              "cannot be combined"),
    "--plugins without value": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--plugins"], "--plugins needs a value"),
    "no upstream key": ({"CREDENTIALS_DIRECTORY": "{creds/upstream:}"}, [], "no LiteLLM key: "),
    "empty upstream key": ({"CREDENTIALS_DIRECTORY": "{creds/upstream: }"}, [],
                           "the LiteLLM key credential"),
    "placeholder upstream key": ({"CREDENTIALS_DIRECTORY": "{creds/upstream:replace-with-the-litellm-key}"}, [],
                                 "still holds the placeholder replace-with-the-litellm-key"),
    "upstream key in the environment": ({"CREDENTIALS_DIRECTORY": "{creds}", "OPENAI_API_KEY": "k"}, [],
                                        "OPENAI_API_KEY is set in the environment, where /proc/PID/environ shows it"),
    "another provider's key": ({"CREDENTIALS_DIRECTORY": "{creds}", "CEREBRAS_API_KEY": "x"}, [],
                               "CEREBRAS_API_KEY set in the environment"),
    "no base url": ({"CREDENTIALS_DIRECTORY": "{creds}"}, ["--base-url="], "--base-url is missing or empty"),
    "retries out of range": ({"CREDENTIALS_DIRECTORY": "{creds}", "UPSTREAM_RETRIES": "9"}, [],
                             "UPSTREAM_RETRIES=9 is out of range: set 0..5"),
    "deadline not a number": ({"CREDENTIALS_DIRECTORY": "{creds}", "REQUEST_DEADLINE_SECONDS": "5m"}, [],
                              "REQUEST_DEADLINE_SECONDS='5m' is not a number"),
    "unknown approach": ({"CREDENTIALS_DIRECTORY": "{creds}", "PROXY_APPROACHES": "moa,mao"}, [],
                         "PROXY_APPROACHES names unknown approach 'mao'"),
    "approach of a plugin not enabled": ({"CREDENTIALS_DIRECTORY": "{creds}", "PROXY_APPROACHES": "moa,readurls"}, [],
                                         "PROXY_APPROACHES names plugin 'readurls', which PROXY_PLUGINS does not enable"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_exits_78_with_one_line(case, tmp_path):
    env_template, args, expected = REFUSALS[case]
    env = {}
    for name, value in env_template.items():
        if value is None:  # unset what run_launcher would otherwise provide
            env[name] = None
        elif value == "{empty_dir}":
            (tmp_path / "empty").mkdir()
            value = str(tmp_path / "empty")
        elif value.startswith("{creds/upstream:"):  # a good proxy key, this upstream key ("" = none)
            creds = launcher_credentials(tmp_path / "creds", KEY)
            upstream = value[len("{creds/upstream:"):-1]
            if upstream:
                (creds / "upstream-key").write_text(upstream + "\n")
            else:
                (creds / "upstream-key").unlink()
            value = str(creds)
        elif value.startswith("{creds"):  # this proxy key, a good upstream key
            key = value[len("{creds:"):-1] if value.startswith("{creds:") else KEY
            value = str(launcher_credentials(tmp_path / "creds", key))
        env[name] = value
    result = run_launcher(args, env)
    assert result.returncode == 78, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("optillm-proxy-launcher: refused: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert KEY not in result.stderr


def lean_and_full_only() -> tuple[list[str], list[str]]:
    table = json.loads(PLUGIN_TABLE.read_text())["plugins"]
    lean = sorted(s for s, p in table.items() if "lean" in p["profiles"])
    return lean, sorted(s for s in table if s not in lean)


@pytest.mark.parametrize("case", ["one full-only", "lean ones mixed with full-only", "all"])
def test_lean_runtime_refuses_plugins_it_cannot_import(tmp_path, case):
    lean, full_only = lean_and_full_only()
    assert lean and full_only, "the table must distinguish the profiles"
    setting, refused = {
        "one full-only": (full_only[0], full_only[:1]),
        "lean ones mixed with full-only": (",".join(lean + full_only[:2]), full_only[:2]),
        "all": ("all", full_only),
    }[case]
    launcher = lean_runtime_copy(tmp_path / "rt")
    creds = write_credentials(tmp_path / "creds")
    result = run_launcher(env={"CREDENTIALS_DIRECTORY": str(creds), "PROXY_PLUGINS": setting}, launcher=launcher)
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.splitlines()
    assert f"plugin(s) {', '.join(refused)} cannot be imported by this runtime's 'lean' profile" in line
    assert line.endswith("set PROXY_PLUGINS to a subset of: " + ", ".join(lean))


def test_lean_runtime_accepts_its_own_plugins(tmp_path):
    """The profile check passes for lean plugins; the next check (no key) is what stops it here."""
    lean, _ = lean_and_full_only()
    launcher = lean_runtime_copy(tmp_path / "rt")
    result = run_launcher(env={"PROXY_PLUGINS": ",".join(lean)}, launcher=launcher)
    assert result.returncode == 78 and "the credential api-key is not loaded" in result.stderr


def test_plugins_option_overrides_env_and_is_removed_from_optillm_argv():
    launcher = settings
    value, rest = launcher.take_option(["--port", "1", "--plugins", "genselect", "--model", "m"], "--plugins")
    assert (value, rest) == ("genselect", ["--port", "1", "--model", "m"])
    value, rest = launcher.take_option(["--plugins=all", "--plugins-dir", "/x"], "--plugins")
    assert (value, rest) == ("all", ["--plugins-dir", "/x"])
    table = launcher.plugin_table()
    assert launcher.parse_plugin_setting(" None ", table) == []
    assert launcher.parse_plugin_setting("", table) == []
    assert launcher.parse_plugin_setting("ALL", table) == "all"
    assert launcher.parse_plugin_setting("readurls, genselect,readurls", table) == ["readurls", "genselect"]


def test_notifier_reaches_abstract_socket_and_never_raises(notify_listener):
    launcher = notify
    listener = notify_listener(abstract=True)
    assert launcher.Notifier(listener.env_value).send("READY=1")
    assert listener.receive(5) == "READY=1"
    # Nobody listening: reported, not raised.
    assert launcher.Notifier("@optillm-proxy-test-nobody-" + uuid.uuid4().hex).send("WATCHDOG=1") is False
    assert launcher.Notifier(None).send("READY=1") is False


class SwitchableHealth:
    """A /health endpoint the test can make hang, as a deadlocked server would."""

    def __init__(self):
        import http.server
        import threading

        self.hang = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if outer.hang.is_set():
                    outer.release.wait(30)
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the launcher gave up on a hung probe: a broken pipe here is the point

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_status_line_lists_only_the_approaches_the_policy_allows():
    """`systemctl status` must not suggest a prefix the policy refuses: optillm knows 15 core
    approaches, PROXY_APPROACHES lets some through."""
    from types import SimpleNamespace

    table = {"majority_voting": {}}
    server = SimpleNamespace(plugin_approaches={"majority_voting": object()},
                             known_approaches=["none", "mcts", "bon", "moa", "rto", "z3", "self_consistency",
                                               "pvg", "rstar", "cot_reflection", "plansearch", "leap", "re2",
                                               "cepo", "mars", "none"])
    allowed = settings.parse_approaches("majority_voting,moa,bon,moa&bon", ["majority_voting"], table)
    line = notify.status_line(server, "http://127.0.0.1:4020", ["majority_voting"], allowed)
    assert line == ("serving http://127.0.0.1:4020; approaches by model prefix: moa-, bon-, majority_voting-, "
                    "moa&bon-; 1 plugin(s): majority_voting")
    assert "cot_reflection" not in line and "more core" not in line
    default = notify.status_line(server, "http://x", [], settings.parse_approaches(None, [], {}))
    assert "prefix: moa-, bon-, plansearch-, self_consistency-; " in default
    only_base = notify.status_line(server, "http://x", [], settings.parse_approaches("none", [], {}))
    assert "prefix: none (base model only)" in only_base


def test_watchdog_is_fed_only_while_health_answers(notify_listener):
    """The process keeps running but /health hangs: pings stop, and resume when it answers again."""
    import threading
    from types import SimpleNamespace

    launcher = notify
    listener = notify_listener(abstract=True)
    health = SwitchableHealth()
    stop = threading.Event()
    server = SimpleNamespace(plugin_approaches={"readurls": None}, known_approaches=["none"] + ["x"] * 14)
    thread = threading.Thread(target=launcher.supervise, daemon=True,
                              args=(server, launcher.Notifier(listener.env_value), "127.0.0.1", health.port, 0.5, stop,
                                    ["readurls", "spl"]))
    thread.start()
    try:
        ready = listener.wait_for("READY=1", 30)
        assert ready.endswith("1 plugin(s): readurls; FAILED to load: spl (see the journal)")
        for _ in range(3):
            assert listener.wait_for("WATCHDOG=1", 10) == "WATCHDOG=1"
        health.hang.set()
        assert listener.wait_for("STATUS=/health did not answer", 10).endswith("watchdog not fed")
        # While /health hangs: nothing at all (the status changes once, on the transition), over
        # several watchdog periods (interval / 2) and /health bounds (0.5 s at the least).
        assert listener.receive(1.5) is None
        health.hang.clear()
        health.release.set()
        recovered = listener.wait_for("WATCHDOG=1", 10)
        assert "STATUS=serving http://127.0.0.1:" in recovered  # the operator's status line is back
    finally:
        stop.set()
        health.close()
        thread.join(10)
    assert not thread.is_alive()


def test_plugin_table_matches_the_locked_optillm(full_runtime):
    """plugins.json lists exactly the bundled plugin files, with the SLUG each one defines."""
    import ast

    [plugins_dir] = full_runtime.glob("lib/python3*/site-packages/optillm/plugins")
    found = {}
    for path in plugins_dir.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SLUG" for t in node.targets):
                found[node.value.value] = path.stem
    table = json.loads(PLUGIN_TABLE.read_text())["plugins"]
    assert len(table) == 16
    assert {slug: entry["module"] for slug, entry in table.items()} == found
    for slug, entry in table.items():
        assert "full" in entry["profiles"] and set(entry["profiles"]) <= {"lean", "full"}, slug
        assert isinstance(entry["risk"], str)
    for slug in ("executecode", "coc", "readurls", "web_search", "deep_research", "mcp"):
        assert table[slug]["risk"], f"{slug} widens what a caller can make the proxy do: its risk must say how"


# ---------------------------------------------------------------------------------------------
# Real optillm through the launcher


@pytest.mark.real
def test_default_set_ready_key_fanout_and_clean_stop(full_runtime, upstream, optillm_factory, notify_listener,
                                                     tmp_path):
    listener = notify_listener()
    p = start_via_launcher(optillm_factory, full_runtime, upstream, tmp_path, listener=listener)

    ready = listener.wait_for("READY=1", START_TIMEOUT, p)
    # READY=1 is sent only after the launcher's own /health probe answered: it answers now, first try.
    assert health_answers(p.url)
    status = dict(line.split("=", 1) for line in ready.splitlines())
    assert status["READY"] == "1"
    assert f"serving http://127.0.0.1:{p.port}" in status["STATUS"]
    assert "moa-, bon-, plansearch-, self_consistency-" in status["STATUS"]
    assert status["STATUS"].endswith("0 plugins")
    assert loaded_plugins(p.log_text()) == []

    # The key came from the credential: enforced, and not visible in argv or the environment.
    assert httpx.get(f"{p.url}/v1/models", timeout=30).status_code == 401
    assert httpx.get(f"{p.url}/v1/models", headers={"Authorization": "Bearer wrong-key"}, timeout=30).status_code == 401
    assert httpx.get(f"{p.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    cmdline = Path(f"/proc/{p.proc.pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{p.proc.pid}/environ").read_bytes()
    assert str(LAUNCHER).encode() in cmdline  # the right process
    assert KEY.encode() not in cmdline and KEY.encode() not in environ
    assert KEY not in p.log_text()

    # No plugin loaded, yet the four routed strategies are core approaches and fan out as stock.
    for model, calls in FAN_OUT.items():
        upstream.reset()
        r = chat(p.url, model)
        assert r.status_code == 200, r.text
        seen = upstream.calls()
        assert len(seen) == calls, (model, seen)
        assert {c["model"] for c in seen} == {"jerry-xl"}
        assert {c["authorization"] for c in seen} == {"Bearer upstream-key-for-tests"}
    # A plugin prefix that is not enabled: stock 0.3.12 would pass the name upstream unchanged (and
    # LiteLLM would route it back here); the request policy refuses it before any upstream call.
    upstream.reset()
    refused = chat(p.url, "readurls-jerry-xl")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "approach-not-allowed"
    assert upstream.calls() == []

    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    stopping = dict(line.split("=", 1) for line in listener.wait_for("STOPPING=1", 10).splitlines())
    # The drain tells systemd what it waits for, and for how long at most (DRAIN_SECONDS + margin).
    assert stopping["STATUS"] == "draining: 0 request(s) in flight, up to 300 s (DRAIN_SECONDS)"
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) == 310_000_000
    assert "drained: every request in flight was answered" in p.log_text()


@pytest.mark.real
def test_watchdog_pings_only_while_health_answers(full_runtime, upstream, optillm_factory, notify_listener, tmp_path):
    listener = notify_listener(abstract=True)
    # 1 s watchdog: a ping every 0.5 s, so the test sees many quickly.
    p = start_via_launcher(optillm_factory, full_runtime, upstream, tmp_path, listener=listener,
                           env={"WATCHDOG_USEC": "1000000"})
    listener.wait_for("READY=1", START_TIMEOUT, p)
    for _ in range(3):
        assert listener.wait_for("WATCHDOG=1", 30, p) == "WATCHDOG=1"

    os.kill(p.proc.pid, signal.SIGSTOP)
    try:
        # Drain what was sent before the stop took effect, then expect silence for 8 intervals.
        while listener.receive(1.0) is not None:
            pass
        assert listener.receive(4.0) is None, "a stopped server must not keep the watchdog fed"
    finally:
        os.kill(p.proc.pid, signal.SIGCONT)
    assert listener.wait_for("WATCHDOG=1", 30, p).startswith("WATCHDOG=1")
    assert health_answers(p.url)


def settled_thread_count(pid: int, quiet_seconds: float = 1.0, deadline: float = 30.0) -> int:
    """Wait until the process's thread count has not changed for quiet_seconds (request threads gone)."""
    end = time.monotonic() + deadline
    last, since = None, time.monotonic()
    while time.monotonic() < end:
        count = len(os.listdir(f"/proc/{pid}/task"))
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_seconds:
            return count
        time.sleep(0.05)
    raise AssertionError(f"pid {pid}: thread count still changing after {deadline:g} s")


@pytest.mark.real
def test_sigabrt_leaves_every_threads_stack_in_the_log(full_runtime, upstream, optillm_factory,
                                                       notify_listener, tmp_path):
    # What systemd does when the watchdog expires (WatchdogSignal=SIGABRT): the launcher's
    # faulthandler writes every thread's stack to the log (the journal) and the process dies of it.
    # The all-threads dump races with a request thread that is exiting at that instant (measured:
    # about half the aborts sent right after a /health answer ended in SIGSEGV mid-dump), so this
    # proves the dump on a quiet server; docs/design.md tells operators it is best effort.
    listener = notify_listener()
    p = start_via_launcher(optillm_factory, full_runtime, upstream, tmp_path, listener=listener)
    listener.wait_for("READY=1", START_TIMEOUT, p)
    settled_thread_count(p.proc.pid)
    os.kill(p.proc.pid, signal.SIGABRT)
    assert p.proc.wait(30) == -signal.SIGABRT
    log = p.log_text()
    assert "Fatal Python error: Aborted" in log
    assert "waitress/wasyncore.py" in log, "the main thread's stack (the server's event loop) must be in the dump"


@pytest.mark.real
def test_named_subset_loads_exactly_that_and_never_cwd_plugins(full_runtime, upstream, optillm_factory,
                                                               notify_listener, tmp_path):
    # A plugin planted in <cwd>/optillm/plugins: stock load_plugins would run it, the subset loader must not.
    planted = tmp_path / "cwd" / "optillm" / "plugins"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-plugin-ran"
    (planted / "planted_plugin.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nSLUG = 'planted'\ndef run(*a, **k):\n    return '', 0\n")
    listener = notify_listener()
    creds = write_credentials(tmp_path / "creds")
    argv = launcher_argv(full_runtime, "--base-url", upstream.base_url, "--plugins", "majority_voting,readurls")
    # cd into the planted directory; exec keeps the PID the factory watches.
    shell = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(tmp_path / "cwd"), *argv]
    p = optillm_factory(full_runtime, upstream.base_url, key=KEY, wait=False, argv=shell,
                        env_extra={"CREDENTIALS_DIRECTORY": str(creds), "NOTIFY_SOCKET": listener.env_value,
                                   "PROXY_PLUGINS": "all"})  # --plugins wins over the env file
    ready = listener.wait_for("READY=1", START_TIMEOUT, p)
    assert health_answers(p.url)
    assert ready.endswith("2 plugin(s): majority_voting, readurls")
    assert loaded_plugins(p.log_text()) == ["majority_voting", "readurls"]
    assert not marker.exists()
    upstream.reset()
    r = chat(p.url, "majority_voting-jerry-xl")
    assert r.status_code == 200, r.text
    assert upstream.calls() and {c["model"] for c in upstream.calls()} == {"jerry-xl"}


@pytest.mark.real
def test_all_loads_every_bundled_plugin(full_runtime, upstream, optillm_factory, notify_listener, tmp_path):
    listener = notify_listener()
    p = start_via_launcher(optillm_factory, full_runtime, upstream, tmp_path, listener=listener,
                           env={"PROXY_PLUGINS": "all"})
    ready = listener.wait_for("READY=1", START_TIMEOUT, p)
    # Loading 16 plugins takes seconds before optillm listens: READY=1 must not come before that.
    assert health_answers(p.url)
    assert loaded_plugins(p.log_text()) == ALL_SLUGS
    assert f"16 plugin(s): {', '.join(ALL_SLUGS)}" in ready
    assert "Error loading" not in p.log_text()
    upstream.reset()
    assert chat(p.url, "moa-jerry-xl").status_code == 200
    assert len(upstream.calls()) == 3
