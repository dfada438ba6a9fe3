"""ops/runtime/install_state.py: install.sh's change detection, and the record opsctl keeps after its own
restarts so that a plain install.sh afterwards restarts nothing (the box tests prove it on systemd)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ops.runtime import install_state
from ops.from_launcher.layout import Layout
from ops.runtime.upgrade import System

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def layout(tmp_path) -> Layout:
    """A staged layout with every file the service depends on."""
    lay = Layout(tmp_path)
    libexec = lay.runtimes / "0.3.12-lean-aaaa" / "libexec"
    write(libexec / "optillm-proxy-launcher.py", "launcher\n")
    write(libexec / "optillm_proxy_launcher" / "main.py", "main\n")
    write(libexec / "optillm_proxy_launcher" / "__pycache__" / "main.cpython-311.pyc", "bytecode\n")
    write(libexec / "lean.txt", "lock\n")
    lay.prefix.mkdir(parents=True, exist_ok=True)
    os.symlink("runtimes/0.3.12-lean-aaaa", lay.current)
    write(lay.unit_file, "[Service]\n")
    write(lay.socket_file, "[Socket]\n")
    write(lay.dropin_dir / "limits.conf", "[Service]\nMemoryMax=2G\n")
    write(lay.dropin_dir / "notes.txt", "not a drop-in\n")
    write(lay.env_file, "PROXY_PLUGINS=none\n", 0o600)
    write(lay.key_file, "opx-key\n", 0o600)
    write(lay.upstream_key_file, "litellm-key\n", 0o600)
    write(lay.provider_file, "providers: []\n")
    return lay


def shell_tree_digest(directory: Path, *find_args: str) -> str:
    """The digest as sha256sum computes it over `find`'s files: the format records on installed
    hosts were written in, which an unchanged tree must keep matching."""
    script = 'cd "$1" && shift && find . -type f "$@" | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d" " -f1'
    return subprocess.run(["bash", "-c", script, "-", str(directory), *find_args], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_fingerprint_keeps_the_format_of_records_on_installed_hosts(layout):
    found = install_state.fingerprint(layout)
    assert list(found) == ["runtime", "launcher", "unit", "socket", "drop-ins", "env-file", "key-file",
                           "upstream-key", "provider-file"]
    assert found["runtime"] == "runtimes/0.3.12-lean-aaaa"
    assert found["launcher"] == shell_tree_digest(layout.current / "libexec", "-not", "-path", "*/__pycache__/*")
    assert found["drop-ins"] == shell_tree_digest(layout.dropin_dir, "-name", "*.conf")
    sha = subprocess.run(["sha256sum", str(layout.env_file)], capture_output=True, text=True, check=True)
    assert found["env-file"] == sha.stdout.split()[0]


def test_absent_parts_are_named_absent(tmp_path):
    assert set(install_state.fingerprint(Layout(tmp_path)).values()) == {"absent"}


def test_first_run_then_no_change_then_the_edited_file(layout):
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == ["first-install"]
    install_state.record(layout, install_state.fingerprint(layout))
    assert stat.S_IMODE(layout.install_state.stat().st_mode) == 0o600
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == []
    # Bytecode is not the launcher; a file beside the drop-ins is not a drop-in.
    write(layout.current / "libexec" / "optillm_proxy_launcher" / "__pycache__" / "x.pyc", "other\n")
    write(layout.dropin_dir / "notes.txt", "edited\n")
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == []
    write(layout.env_file, "PROXY_PLUGINS=memory\n", 0o600)
    write(layout.dropin_dir / "limits.conf", "[Service]\n")
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == \
        ["drop-ins", "env-file"]


def test_recording_the_same_state_touches_nothing(layout):
    install_state.record(layout, install_state.fingerprint(layout))
    before = layout.install_state.stat().st_mtime_ns
    os.utime(layout.install_state, ns=(before - 10**9, before - 10**9))
    install_state.record(layout, install_state.fingerprint(layout))
    assert layout.install_state.stat().st_mtime_ns == before - 10**9
    assert [p.name for p in layout.prefix.iterdir() if "install-tmp" in p.name] == []


def test_a_restart_records_what_it_applies_and_keeps_the_unit_lines(layout):
    """After opsctl switched the runtime and rotated the key, both are recorded; a unit file
    changed meanwhile is not (a restart without daemon-reload does not apply it)."""
    install_state.record(layout, install_state.fingerprint(layout))
    write(layout.runtimes / "0.3.12-lean-bbbb" / "libexec" / "optillm-proxy-launcher.py", "launcher 2\n")
    os.unlink(layout.current)
    os.symlink("runtimes/0.3.12-lean-bbbb", layout.current)
    write(layout.key_file, "opx-new-key\n", 0o600)
    write(layout.unit_file, "[Service]\nUser=x\n")
    install_state.record_restart(layout)
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == ["unit"]


def test_a_restart_without_a_record_records_nothing(layout):
    install_state.record_restart(layout)
    assert not layout.install_state.exists()


def test_every_restart_opsctl_makes_is_recorded(layout, monkeypatch):
    """System.restart_service is the one way opsctl restarts the service (key rotate, runtime
    upgrade, rollback and switching back all call it)."""
    install_state.record(layout, install_state.fingerprint(layout))
    system = System(opsctl=["opsctl"], layout=layout)
    calls = []
    monkeypatch.setattr(system, "run", lambda argv, timeout: (calls.append(argv), (0, ""))[1])
    write(layout.key_file, "opx-rotated\n", 0o600)
    assert system.restart_service() == (0, "")
    assert ["systemctl", "restart", "optillm-proxy"] in calls
    assert install_state.changes(install_state.recorded(layout), install_state.fingerprint(layout)) == []


def test_the_tool_prints_one_change_a_line_and_records_only_when_asked(layout):
    def tool(*args):
        # -I as install.sh runs it (from opsctl's venv); the checkout's sources put on sys.path.
        code = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; from ops.runtime.install_state import main; "
                "sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-I", "-c", code, str(REPO), str(REPO / "launcher"), *args],
                              capture_output=True, text=True)

    dry = tool("changes", str(layout.root))
    assert (dry.returncode, dry.stdout, dry.stderr) == (0, "first-install\n", "")
    assert not layout.install_state.exists()
    real = tool("changes", "--record", str(layout.root))
    assert (real.returncode, real.stdout) == (0, "first-install\n") and layout.install_state.exists()
    again = tool("changes", "--record", str(layout.root))
    assert (again.returncode, again.stdout) == (0, "")
    write(layout.env_file, "edited\n", 0o600)
    write(layout.key_file, "opx-other\n", 0o600)
    assert tool("changes", str(layout.root)).stdout == "env-file\nkey-file\n"
    usage = tool("changes", "--nope", str(layout.root))
    assert usage.returncode == 2 and usage.stderr.startswith("usage: python -m ops.runtime.install_state")
