"""Checks of a host after `./install.sh`: what an operator runs against their own box.

    sudo tests/testinfra/run.sh --hosts=local://        # on the host itself, as root
    tests/testinfra/run.sh --hosts=ssh://root@HOST      # from a checkout elsewhere, over ssh

run.sh needs no uv on PATH (it uses the uv install.sh installed) and writes nothing into the
checkout: the suite's venv is built outside it (`run.sh --help`).

Every check goes through testinfra's `host` (commands and files on the target), so the same
suite works over ssh and locally. Root is needed on the target (key files are root 0600,
/proc/PID/environ of the service).

How CI runs it: tests/test_box_testinfra.py runs this suite inside the booted systemd box
(tests/box/) after the real install.sh ran there, with the same `tests/testinfra/run.sh
--hosts=local://`, from the repo bound read-only at /repo (the venv is built by the installed uv
from uv.lock's dev group; downloads come from the host's uv cache bound into the box). Without
--hosts the suite is not collected (tests/testinfra/conftest.py): it must never check the machine
running pytest by accident.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from urllib.parse import urlparse

import pytest
import yaml

from ops.from_launcher.layout import DEFAULT as LAYOUT
from ops.from_launcher.layout import LISTEN_HOST, LISTEN_PORT, OPTILLM_VERSION, SERVICE, SERVICE_USER

NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def _show(host, prop: str) -> str:
    return host.check_output(f"systemctl show {SERVICE} -p {prop} --value")


@pytest.fixture
def main_pid(host) -> int:
    pid = int(_show(host, "MainPID"))
    assert pid > 0, f"{SERVICE} has no main process"
    return pid


@pytest.fixture
def proxy_key(host) -> str:
    with host.sudo():
        key = host.file(str(LAYOUT.key_file)).content_string.strip()
    assert key, f"{LAYOUT.key_file} is empty"
    return key


def test_service_user_exists_without_login_shell(host):
    user = host.user(SERVICE_USER)
    assert user.exists
    assert user.shell in NO_LOGIN_SHELLS, f"{SERVICE_USER} has login shell {user.shell}"
    assert user.uid < 1000, f"{SERVICE_USER} is not a system user (uid {user.uid})"


def test_runtime_is_root_owned_and_not_writable_by_service_user(host):
    runtime = host.check_output(f"readlink -f {LAYOUT.current}")
    assert runtime.startswith(str(LAYOUT.runtimes) + "/")
    for path in (str(LAYOUT.prefix), runtime, f"{runtime}/bin/python", f"{runtime}/libexec"):
        f = host.file(path)
        assert f.user == "root", f"{path} is owned by {f.user}"
        assert not f.mode & 0o022, f"{path} is group/other-writable ({oct(f.mode)})"
    # Nothing under the prefix is writable by the service user, checked as that user.
    writable = host.run(f"runuser -u {SERVICE_USER} -- find {LAYOUT.prefix}/ -writable -print -quit")
    assert writable.stdout.strip() == "", f"{SERVICE_USER} can write {writable.stdout.strip()}"


def test_runtime_holds_optillm_exactly_pinned(host):
    version = host.check_output(
        f"{LAYOUT.current}/bin/python -I -c "
        + shlex.quote("import importlib.metadata as m; print(m.version('optillm'))"))
    assert version == OPTILLM_VERSION
    manifest = json.loads(host.file(str(LAYOUT.runtime_manifest())).content_string)
    assert manifest["optillm_version"] == OPTILLM_VERSION


def test_unit_enabled_and_active(host):
    service = host.service(SERVICE)
    assert service.is_enabled
    assert service.is_running
    assert _show(host, "ActiveState") == "active"


def test_listens_on_loopback_4020_only(host):
    assert host.socket(f"tcp://{LISTEN_HOST}:{LISTEN_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{LISTEN_PORT}").is_listening
    assert not host.socket(f"tcp://:::{LISTEN_PORT}").is_listening
    # Every listening socket on the port, whatever address: only 127.0.0.1.
    lines = host.check_output(f"ss -Htln sport = :{LISTEN_PORT}").splitlines()
    local_addresses = {line.split()[3] for line in lines if line.strip()}
    assert local_addresses == {f"{LISTEN_HOST}:{LISTEN_PORT}"}


@pytest.mark.parametrize("path", [LAYOUT.env_file, LAYOUT.key_file], ids=["env", "api-key"])
def test_secret_files_root_only(host, path):
    with host.sudo():
        f = host.file(str(path))
        assert f.exists, f"{path} missing"
        assert (f.user, f.group, f.mode) == ("root", "root", 0o600), \
            f"{path} is {f.user}:{f.group} {oct(f.mode)}, want root:root 0600"


def test_service_environment_and_cmdline_hold_no_key(host, main_pid, proxy_key):
    with host.sudo():
        environ = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid}/environ")
        cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{main_pid}/cmdline")
    names = {line.split("=", 1)[0] for line in environ.splitlines() if "=" in line}
    assert not {n for n in names if n.startswith("OPTILLM_")}, f"OPTILLM_* in the service environment: {names}"
    assert proxy_key not in environ
    assert proxy_key not in cmdline
    assert "--optillm-api-key" not in cmdline
    assert "--approach" not in cmdline


def test_provider_file_points_only_at_loopback(host):
    f = host.file(str(LAYOUT.provider_file))
    assert f.exists and f.user == "root" and not f.mode & 0o022
    config = yaml.safe_load(f.content_string)
    providers = config.get("providers") or []
    assert providers, f"no providers in {LAYOUT.provider_file}"
    for provider in providers:
        hostname = urlparse(provider["base_url"]).hostname
        assert hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback, \
            f"provider {provider.get('name')} points at {provider['base_url']}"


def test_opsctl_health_ok(host):
    result = host.run("opsctl health")
    assert result.rc == 0, f"opsctl health exit {result.rc}: {result.stdout}{result.stderr}"
    assert " OK - " in result.stdout, result.stdout


def test_opsctl_lint_clean(host):
    with host.sudo():
        result = host.run("opsctl lint")
    assert result.rc == 0, f"opsctl lint exit {result.rc}: {result.stdout}{result.stderr}"


def test_journal_since_last_start_has_no_traceback(host):
    invocation = _show(host, "InvocationID")
    assert invocation, f"{SERVICE} has no invocation id (never started?)"
    with host.sudo():
        journal = host.check_output(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
    assert "Traceback" not in journal, journal[-3000:]
