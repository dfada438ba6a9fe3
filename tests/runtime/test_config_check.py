"""opsctl runtime check: the launcher's own --check, in a transient unit built from the installed unit.

Unit level here (the argv systemd-run gets, how its output becomes a verdict); the launcher's
--check against real optillm; the four configurations issue 20 found restarting into an outage are
proven in the booted box (tests/test_box_faults.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ops.runtime import config_check
from ops.from_launcher.layout import Layout
from tests.fixtures.runtime import REPO, launcher_credentials

UNIT = REPO / "systemd" / "optillm-proxy.service"
LAUNCHER = REPO / "launcher" / "optillm-proxy-launcher.py"


def staged_layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    layout.unit_file.parent.mkdir(parents=True)
    layout.unit_file.write_text(UNIT.read_text())
    return layout


def test_argv_is_the_installed_unit_with_the_check_flag_as_an_exec_service(tmp_path):
    layout = staged_layout(tmp_path)
    runtime = Path("/opt/optillm-proxy/runtimes/0.3.12-lean-abc")
    argv = config_check.argv(layout, runtime)
    assert argv[:1] == ["systemd-run"] and "--wait" in argv and "--pipe" in argv
    properties = [a.split("=", 1)[1] for a in argv if a.startswith("--property=")]
    assert "Type=exec" in properties and "Type=notify" not in properties
    # The unit's sandbox, user and credentials come along: the check sees what a start sees.
    for wanted in ("User=optillm-proxy", "ProtectSystem=strict", "PrivateUsers=yes",
                   "LoadCredential=api-key:/etc/optillm-proxy/api-key",
                   "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key",
                   "EnvironmentFile=/etc/optillm-proxy/env"):
        assert wanted in properties, wanted
    command = argv[argv.index("--") + 1:]
    assert command[0] == f"{runtime}/bin/python" and command[-1] == "--check"
    assert f"{runtime}/libexec/optillm-proxy-launcher.py" in command


@pytest.mark.parametrize("code,output,accepted,line", [
    (0, "noise\noptillm-proxy-launcher: configuration accepted (0 plugin(s), approaches moa)\n", True,
     "optillm-proxy-launcher: configuration accepted (0 plugin(s), approaches moa)"),
    (78, "x\noptillm-proxy-launcher: refused: PROXY_PLUGINS names unknown plugin 'jsn': known are ...\n", False,
     "optillm-proxy-launcher: refused: PROXY_PLUGINS names unknown plugin 'jsn': known are ..."),
    (1, "Job failed. See journalctl\n", False, "the check exited 1 without a verdict: Job failed. See journalctl"),
    (0, "", False, "the check exited 0 without a verdict: (no output)"),
])
def test_verdict_quotes_the_launcher(code, output, accepted, line):
    assert config_check.verdict(code, output) == config_check.CheckResult(accepted, line)


@pytest.mark.real
@pytest.mark.parametrize("env,verdict", [
    ({"PROXY_PLUGINS": "majority_voting"}, "configuration accepted (1 plugin(s)"),
    ({"PROXY_PLUGINS": "majority_voting,json"}, "refused: plugin(s) json cannot be imported by this runtime's 'lean'"),
    ({"PROXY_PLUGINS": "majorty_voting"}, "refused: PROXY_PLUGINS names unknown plugin 'majorty_voting'"),
    ({"OPTILLM_API_KEY": "x"}, "refused: OPTILLM_API_KEY is set in the environment"),
])
def test_launcher_check_mode_answers_without_serving(lean_runtime, tmp_path, env, verdict):
    """--check runs every start check, patch points and plugin imports included, and exits."""
    runtime = tmp_path / "rt"
    subprocess.run(["cp", "-al", str(lean_runtime), str(runtime)], check=True)
    # Laid out as install.sh lays a runtime out: the launcher in libexec/, the manifest naming the profile.
    shutil.copytree(LAUNCHER.parent, runtime / "libexec", ignore=shutil.ignore_patterns("__pycache__"))
    (runtime / "optillm-proxy-runtime.json").write_text('{"profile": "lean"}')
    creds = launcher_credentials(tmp_path / "creds", "opx-check-test-key-0123456789abcdef")
    launcher = runtime / "libexec" / LAUNCHER.name
    proc = subprocess.run([str(runtime / "bin" / "python"), "-I", str(launcher), "--check", "--host", "127.0.0.1",
                           "--port", "9", "--base-url", "http://127.0.0.1:9/v1"], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                            "CREDENTIALS_DIRECTORY": str(creds), **env})
    output = proc.stdout + proc.stderr
    assert f"optillm-proxy-launcher: {verdict}" in output, output[-2000:]
    assert proc.returncode == (0 if "accepted" in verdict else 78)
    assert "Running on" not in output  # it never served


# --- opsctl key rotate (ops/runtime/keys.py), with the system faked; the box test rotates for real ------


class FakeSystem:
    def __init__(self, restart_code=0):
        self.restart_code, self.restarts = restart_code, 0

    def restart_service(self):
        self.restarts += 1
        return self.restart_code, "" if self.restart_code == 0 else "Job failed"

    def unit_active(self, name):
        return False  # a stopped service is restarted (ops/runtime/service.py; its reload: tests/runtime/test_service.py)


def key_layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    layout.key_file.parent.mkdir(parents=True)
    layout.key_file.write_text("opx-the-old-key-0123456789abcdefghijklmnop\n")
    layout.key_file.chmod(0o600)
    return layout


def test_rotation_refused_by_the_launcher_puts_the_old_key_back_and_restarts_nothing(tmp_path):
    from ops.runtime import keys

    layout, system = key_layout(tmp_path), FakeSystem()
    refused = config_check.CheckResult(False, "optillm-proxy-launcher: refused: whatever")
    with pytest.raises(keys.RotationFailed, match="would refuse the new key, so nothing changed: .*whatever"):
        keys.rotate(layout, system, lambda: refused)
    assert layout.key_file.read_text() == "opx-the-old-key-0123456789abcdefghijklmnop\n"
    assert system.restarts == 0
    assert sorted(p.name for p in layout.conf_dir.iterdir()) == ["api-key"]


def test_rotation_writes_a_new_private_key_and_proves_it(tmp_path, monkeypatch):
    from ops.runtime import keys

    layout, system = key_layout(tmp_path), FakeSystem()
    accepted = config_check.CheckResult(True, "optillm-proxy-launcher: configuration accepted")
    new_key = {}

    def status(url, key):
        new_key.setdefault("current", layout.key_file.read_text().strip())
        return 200 if key == new_key["current"] else 401

    monkeypatch.setattr(keys, "key_status", status)
    result = keys.rotate(layout, system, lambda: accepted)
    key = layout.key_file.read_text().strip()
    assert key.startswith("opx-") and len(key) > 40 and not key.startswith("sk-")
    assert layout.key_file.stat().st_mode & 0o777 == 0o600 and system.restarts == 1
    assert key not in result.message and "OPTILLM_PROXY_KEY" in result.message
    assert "applied by a restart" in result.message  # the faked service is not running: a restart
    assert sorted(p.name for p in layout.conf_dir.iterdir()) == ["api-key"]
