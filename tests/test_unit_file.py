"""systemd/optillm-proxy.service, checked by systemd's own tools and against the shared contract.

The booted-box tests prove the same file under a real systemd; these run on any host with
systemd-analyze (PID 1 need not be systemd).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.from_launcher.layout import (BASE_MODEL, DEFAULT, LISTEN_HOST, LISTEN_PORT, SERVICE, SERVICE_USER,
                        UPSTREAM_URL)
from ops.lint.readers.unitfile import UnitFile, parse_unit_text
from tests.prerequisites import require_tool

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / f"{SERVICE}.service"
SOCKET = REPO / "systemd" / f"{SERVICE}.socket"
MAX_EXPOSURE = 1.5
CONTRACT_EXECSTART = (f"{DEFAULT.current}/bin/python -I {DEFAULT.launcher()} --host {LISTEN_HOST} "
                      f"--port {LISTEN_PORT} --base-url {UPSTREAM_URL} --model {BASE_MODEL}")
# Where spl keeps its data inside the runtime (through install.sh's version-free site-packages
# link, relative to the venv) and mcp its logs (HOME).
SPL_DATA_IN_RUNTIME = str((DEFAULT.site_packages(Path("/")) / "optillm/plugins/spl/data").relative_to("/"))
MCP_LOGS = DEFAULT.state_dir / ".optillm" / "logs"


def systemd_analyze() -> str:
    return require_tool("systemd-analyze", "systemd")


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order, read by the one unit-file reader (lint's, which
    opsctl runtime's transient unit uses too); a syntax problem fails here."""
    unit = UnitFile()
    parse_unit_text(text, str(UNIT), unit)
    assert not unit.problems, unit.problems
    sections: dict[str, list[tuple[str, str]]] = {}
    for d in unit.directives:
        sections.setdefault(d.section, []).append((d.key, d.value))
    return sections


UNIT_TEXT = UNIT.read_text()
SECTIONS = parse_unit(UNIT_TEXT)
SERVICE_SECTION = SECTIONS["Service"]


def values(key: str, section: list[tuple[str, str]] = SERVICE_SECTION) -> list[str]:
    return [v for k, v in section if k == key]


def value(key: str, section: list[tuple[str, str]] = SERVICE_SECTION) -> str:
    found = values(key, section)
    assert len(found) == 1, f"{key}= appears {len(found)} times, expected once"
    return found[0]


def analyze_security(unit_path: Path) -> tuple[float, str]:
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit_path)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure figure in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1)), result.stdout


def test_exposure_offline_is_at_most_1_5(capsys, record_property):
    exposure, report = analyze_security(UNIT)
    record_property("exposure_offline", exposure)
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=yes {UNIT.relative_to(REPO)}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, report


def test_exposure_check_can_fail(tmp_path):
    """The parser reads the real figure: a unit without the sandbox scores far worse."""
    bare = tmp_path / f"{SERVICE}.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    exposure, _ = analyze_security(bare)
    assert exposure > 5.0


def verify_root(tmp_path: Path, unit_text: str) -> Path:
    """A file-system root holding this unit, the host's stock units and an executable at ExecStart's path.

    `systemd-analyze verify` checks that ExecStart's binary exists and loads the unit's
    dependencies (sysinit.target, ...): both must be there, and the runtime is not installed here.
    """
    root = tmp_path / "root"
    stock_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                        if (p / "sysinit.target").exists()), None)
    if stock_units is None:
        pytest.fail("the host has no stock systemd units (/usr/lib/systemd/system): apt-get install systemd")
    shutil.copytree(stock_units, root / "usr/lib/systemd/system", symlinks=True)
    # Stand-ins for the commands the unit runs (ExecStart's python, ExecStopPost's sh).
    for command in (str(DEFAULT.current / "bin" / "python"), "/bin/sh"):
        path = root / command.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / UNIT.name).write_text(unit_text)
    (root / "etc/systemd/system" / SOCKET.name).write_text(SOCKET.read_text())
    return root


def run_verify(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_analyze(), "verify", "--man=no", f"--root={root}", UNIT.name, SOCKET.name],
                          capture_output=True, text=True, timeout=120)


def test_systemd_analyze_verify_is_clean(tmp_path):
    root = verify_root(tmp_path, UNIT_TEXT)
    assert (root / "etc/systemd/system" / UNIT.name).read_bytes() == UNIT.read_bytes()
    result = run_verify(root)
    # verify exits 0 on directives it ignores; only silence is clean.
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr)


def test_verify_would_catch_a_broken_unit(tmp_path):
    root = verify_root(tmp_path, UNIT_TEXT.replace("Type=notify", "Type=notifi"))
    result = run_verify(root)
    assert "Failed to parse service type" in result.stderr


def test_execstart_is_exactly_the_contract():
    assert value("ExecStart") == CONTRACT_EXECSTART
    assert value("WorkingDirectory") == str(DEFAULT.prefix)
    assert not any(k.startswith("ExecStart") and k != "ExecStart" for k, _ in SERVICE_SECTION), \
        "readiness comes from sd_notify, not an ExecStartPre/Post step"


def test_no_approach_and_the_reason_is_written_down():
    assert "--approach" not in value("ExecStart")
    comments = "\n".join(line for line in UNIT_TEXT.splitlines() if line.lstrip().startswith("#"))
    assert "--approach proxy" in comments and "--approach auto" in comments


def test_no_key_material_in_the_unit():
    assert "--optillm-api-key" not in UNIT_TEXT
    directives = "\n".join(f"{k}={v}" for entries in SECTIONS.values() for k, v in entries)
    assert not re.search(r"\bOPTILLM_", directives)
    assert not values("Environment"), "settings belong in the env file; keys never in the unit"
    assert not re.search(r"\b(sk|opx)-[A-Za-z0-9_-]{8,}", UNIT_TEXT)
    assert values("EnvironmentFile") == [str(DEFAULT.env_file)]
    # Both keys are credentials: neither is in the environment the env file gives the service.
    assert values("LoadCredential") == [f"api-key:{DEFAULT.key_file}",
                                        f"upstream-key:{DEFAULT.upstream_key_file}"]


def test_stop_drains_and_a_refusal_stops_the_socket():
    assert value("KillMode") == "mixed"  # SIGTERM to the launcher only: plugin children serve the drain
    [stop_post] = values("ExecStopPost")
    assert stop_post.startswith("+/bin/sh -c ")  # privileged: the service user cannot stop units
    assert '"$EXIT_STATUS" = 78' in stop_post and f"stop {SERVICE}.socket" in stop_post


def test_resource_bounds_are_set():
    for name in ("MemoryHigh", "MemoryMax", "TasksMax", "LimitNOFILE"):
        assert value(name) not in ("", "infinity"), name


def test_systemd_native_lifecycle():
    assert value("Type") == "notify"
    assert value("NotifyAccess") == "main"
    assert value("Restart") == "on-failure"
    assert "78" in value("RestartPreventExitStatus").split()
    for key in ("WatchdogSec", "TimeoutStartSec", "RestartSec"):
        assert re.fullmatch(r"\d+s", value(key)), key
    unit = SECTIONS["Unit"]
    assert int(value("StartLimitBurst", unit)) >= 3 and int(value("StartLimitIntervalSec", unit)) >= 60
    # TimeoutStartSec covers the slowest measured start (all plugins, no bytecode: ~18 s) with room.
    assert int(value("TimeoutStartSec")[:-1]) >= 30
    assert value("WantedBy", SECTIONS["Install"]) == "multi-user.target"


def test_identity_and_state():
    assert value("User") == SERVICE_USER and value("Group") == SERVICE_USER
    assert value("UMask") == "0077"
    state_dirs = value("StateDirectory").split()
    assert state_dirs[0] == DEFAULT.state_dir.name
    binds = dict(b.split(":", 1) for b in values("BindPaths"))
    # spl writes <its package dir>/data, mcp writes ~/.optillm/logs: both bound to service-owned state.
    assert set(binds.values()) == {str(DEFAULT.current / SPL_DATA_IN_RUNTIME), str(MCP_LOGS)}
    for source in binds:
        assert source.startswith(str(DEFAULT.state_dir) + "/")
        assert str(Path(source).relative_to(DEFAULT.state_dir.parent)) in state_dirs, \
            f"{source} must be created by StateDirectory= (owned by the service user)"


def test_no_path_in_the_unit_names_a_python_version():
    """One unit for every supported host Python: paths go through the runtime's site-packages link."""
    assert not re.search(r"python3\.\d+", UNIT_TEXT), "use <runtime>/site-packages, not lib/python3.X/..."


def test_spl_bind_path_matches_the_runtime_layout(full_runtime):
    """spl's package is where the link install.sh makes (lib/python3.X/site-packages) points."""
    (found,) = full_runtime.glob("lib/python3.*/site-packages")
    assert (found / Path(SPL_DATA_IN_RUNTIME).relative_to(DEFAULT.site_packages(Path("/")).name)).parent.is_dir()


HARDENING = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
    "RestrictSUIDSGID": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "DevicePolicy": "closed", "PrivateUsers": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "ProtectClock": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible", "ProcSubset": "pid",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "LockPersonality": "yes", "RemoveIPC": "yes",
    "PrivateMounts": "yes", "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "IPAddressDeny": "any",
    "IPAddressAllow": "localhost", "SystemCallArchitectures": "native", "SystemCallErrorNumber": "EPERM",
}


def test_hardening_directives():
    for key, expected in HARDENING.items():
        assert value(key) == expected, key
    assert values("SystemCallFilter") == ["@system-service", "~@privileged @resources"]


def test_every_directive_has_a_why_comment():
    """Each blank-line separated group of directives opens with a comment (sections excepted)."""
    group: list[str] = []
    for line in UNIT_TEXT.splitlines() + [""]:
        if line.strip():
            group.append(line.strip())
            continue
        lines = [g for g in group if not g.startswith("[")]
        if any(not g.startswith("#") for g in lines):
            assert lines[0].startswith("#"), f"directives without a comment saying why: {lines}"
        group = []


def test_socket_unit_exposure_offline_is_at_most_the_services(capsys):
    """systemd-analyze scores a socket unit by the sandbox of commands it could run (it runs none);
    kept at the service's level so that one added later (ExecStartPre=) is sandboxed too."""
    exposure, report = analyze_security(SOCKET)
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=yes {SOCKET.relative_to(REPO)}: exposure {exposure}")
    assert exposure <= 0.9, report


def test_socket_unit_listens_where_execstart_serves():
    """The launcher refuses a socket whose address is not ExecStart's --host/--port (exit 78)."""
    socket_text = SOCKET.read_text()
    assert f"ListenStream={LISTEN_HOST}:{LISTEN_PORT}\n" in socket_text
    assert f"--host {LISTEN_HOST} --port {LISTEN_PORT}" in UNIT_TEXT
    assert f"Requires={SERVICE}.socket" in UNIT_TEXT and f"After={SERVICE}.socket" in UNIT_TEXT
    # The service's own sandbox still allows only loopback; the socket's allow-list matches.
    assert "IPAddressAllow=localhost" in socket_text and "IPAddressDeny=any" in socket_text
    # PrivateNetwork= on a socket unit would create the socket in an empty network namespace.
    assert not [line for line in socket_text.splitlines() if line.startswith("PrivateNetwork")]
