"""Issue 3 (and issue 8's watchdog) proven on a real systemd: the box booted by tests/box/, with
the real install.sh run inside it (fixture `box`, tests/fixtures/box.py).

The proxy in the box is 127.0.0.1:4020 on this host too (shared network); its upstream is the
host's 127.0.0.1:4000 (fixture `box_upstream`). Times are recorded for the summary, not asserted.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request

import pytest

from ops.from_launcher.layout import BASE_MODEL, DEFAULT as LAYOUT, LISTEN_PORT, SERVICE, SERVICE_USER, STRATEGY_PREFIXES
from tests.box import service
from tests.box.mirror import RELEASE_PYTHON, box_release
from tests.fixtures.box import record

pytestmark = pytest.mark.box

MAX_EXPOSURE = 1.5
# Upstream chat calls 0.3.12 makes per request, measured (shared notes, and the runtime fixture test).
FAN_OUT = {BASE_MODEL: 1, f"moa-{BASE_MODEL}": 3, f"bon-{BASE_MODEL}": 4,
           f"plansearch-{BASE_MODEL}": 4, f"self_consistency-{BASE_MODEL}": 5}


def proxy_key(box) -> str:
    return (box.root / str(LAYOUT.key_file).lstrip("/")).read_text().strip()


def chat(box, model: str, key: str | None = None) -> tuple[int, dict]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "What is 6*7?"}],
                       "max_tokens": 50}).encode()
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {proxy_key(box) if key is None else key}"}
    req = urllib.request.Request(f"http://127.0.0.1:{LISTEN_PORT}/v1/chat/completions", data=body,
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def exposure(text: str) -> float:
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    assert match, f"no exposure line in:\n{text[-2000:]}"
    return float(match.group(1))


def test_unit_active_and_enabled(box):
    assert box.run(f"systemctl is-enabled {SERVICE}").stdout.strip() == "enabled"
    assert box.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    assert service.healthy()


def test_systemctl_show_reports_hardening(box):
    shown = service.show(box, "User", "Type", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
                         "PrivateTmp", "PrivateDevices", "CapabilityBoundingSet", "RestrictAddressFamilies",
                         "SystemCallFilter", "SystemCallErrorNumber", "IPAddressDeny", "IPAddressAllow",
                         "UMask", "WorkingDirectory", "Restart", "RestartPreventExitStatus", "WatchdogUSec",
                         "ExecStart", "EnvironmentFiles")
    assert shown["User"] == SERVICE_USER
    assert shown["Type"] == "notify"
    assert shown["NoNewPrivileges"] == "yes"
    assert shown["ProtectSystem"] == "strict"
    assert shown["ProtectHome"] in ("yes", "tmpfs", "read-only")
    assert shown["PrivateTmp"] == "yes"
    assert shown["PrivateDevices"] == "yes"
    assert shown["CapabilityBoundingSet"] == "", "the service must hold no capability"
    families = set(shown["RestrictAddressFamilies"].split())
    assert families and families <= {"AF_INET", "AF_INET6", "AF_UNIX"}, families
    assert "socket" in shown["SystemCallFilter"] and "reboot" not in shown["SystemCallFilter"].split()
    assert shown["SystemCallErrorNumber"] in ("1", "EPERM")
    assert set(shown["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}
    assert set(shown["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128"}
    assert shown["UMask"] == "0077"
    assert shown["WorkingDirectory"] == str(LAYOUT.prefix)
    assert box.check(f"stat -c %U {LAYOUT.prefix}").strip() == "root"
    assert shown["Restart"] == "on-failure"
    assert "78" in shown["RestartPreventExitStatus"].split()
    assert shown["WatchdogUSec"] not in ("0", "infinity", "")
    # systemd 252 prints LoadCredential as "[unprintable]": check the unit's line and the result.
    assert f"LoadCredential=api-key:{LAYOUT.key_file}" in box.check(f"systemctl cat {SERVICE}")
    assert box.check(f"ls /run/credentials/{SERVICE}.service/").split() == ["api-key", "upstream-key"]
    assert str(LAYOUT.env_file) in shown["EnvironmentFiles"]
    exec_start = shown["ExecStart"]
    for flag in ("--host 127.0.0.1", f"--port {LISTEN_PORT}", "--base-url http://127.0.0.1:4000/v1",
                 f"--model {BASE_MODEL}"):
        assert flag in exec_start, f"{flag!r} not in ExecStart {exec_start}"
    assert "--approach" not in exec_start and "--optillm-api-key" not in exec_start


def test_runs_as_service_user(box):
    pid = service.main_pid(box)
    uid = box.check(f"id -u {SERVICE_USER}").strip()
    status = box.check(f"cat /proc/{pid}/status")
    real, effective, saved, fs = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    assert {real, effective, saved, fs} == {uid}
    assert uid != "0"
    assert box.check(f"ps -o user= -p {pid}").strip() == SERVICE_USER


def test_spl_bind_path_lands_in_the_runtime_of_the_boxs_python(box):
    """The unit names current/site-packages/... (no Python version); systemd follows both links and
    mounts the service's spl state on lib/python3.X/... of the current runtime, whatever X is."""
    pid = service.main_pid(box)
    python = box.check("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").strip()
    assert python == RELEASE_PYTHON[box_release()], "tests/box/mirror.py's RELEASE_PYTHON is wrong"
    runtime = box.check(f"readlink -f {LAYOUT.current}").strip()
    want = f"{runtime}/lib/python{python}/site-packages/optillm/plugins/spl/data"
    mounts = [line.split()[4] for line in box.check(f"cat /proc/{pid}/mountinfo").splitlines()]
    assert want in mounts, f"{want} is not a mount point of the service: {[m for m in mounts if 'optillm' in m]}"
    record(f"spl BindPaths= resolved in the box (Python {python})", want.removeprefix(runtime + "/"))


def test_no_key_in_proc_cmdline_or_environ(box, box_upstream):
    key = proxy_key(box)
    assert key and not key.startswith("sk-")
    pid = service.main_pid(box)
    cmdline = box.check(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    environ = box.check(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert key not in cmdline and "--optillm-api-key" not in cmdline
    assert key not in environ
    assert not [line for line in environ.splitlines() if line.startswith("OPTILLM_")]
    # ...and yet the process holds the key: without it 401, with it 200.
    assert chat(box, BASE_MODEL, key="opx-wrong")[0] == 401
    assert chat(box, BASE_MODEL)[0] == 200


def test_exposure_measured_in_box(box):
    online = exposure(box.check(f"systemd-analyze security {SERVICE} --no-pager"))
    offline = exposure(box.check(f"systemd-analyze security --offline=yes --no-pager {LAYOUT.unit_file}"))
    record("box systemd", box.check("systemctl --version").splitlines()[0])
    record("box python3", box.check("python3 --version").strip())
    record("exposure in the box (running unit)", online)
    record("exposure in the box (--offline=yes, unit file)", offline)
    assert online <= MAX_EXPOSURE
    assert offline <= MAX_EXPOSURE
    verify = box.run(f"systemd-analyze verify {LAYOUT.unit_file}")
    assert verify.ok and not verify.stderr.strip(), verify.stderr


def test_strategies_fan_out_under_the_hardened_unit(box, box_upstream):
    """Every routed prefix really runs its strategy under the unit, MemoryDenyWriteExecute included."""
    mdwe = service.show(box, "MemoryDenyWriteExecute")["MemoryDenyWriteExecute"]
    record("MemoryDenyWriteExecute", mdwe)
    if mdwe != "yes":
        unit_text = (box.root / str(LAYOUT.unit_file).lstrip("/")).read_text()
        assert re.search(r"#.*MemoryDenyWriteExecute", unit_text), \
            "MemoryDenyWriteExecute is off without a comment saying why"
    pid, restarts = service.main_pid(box), service.n_restarts(box)
    for model in (BASE_MODEL, *(f"{p}-{BASE_MODEL}" for p in STRATEGY_PREFIXES)):
        box_upstream.reset()
        status, body = chat(box, model)
        assert status == 200, f"{model}: {status}"
        assert body["choices"][0]["message"]["content"]
        calls = box_upstream.calls()
        assert len(calls) == FAN_OUT[model], f"{model}: {len(calls)} upstream calls"
        assert {c["model"] for c in calls} == {BASE_MODEL}, "the upstream must only see the base model"
    # The process that served them is the one that was there: nothing crashed under W^X.
    assert (service.main_pid(box), service.n_restarts(box)) == (pid, restarts)


def test_kill_9_restarts_to_healthy(box):
    service.reset_start_limit(box)
    restarts = service.n_restarts(box)
    took = service.kill_and_recover(box, signal.SIGKILL)
    record("kill -9 -> healthy s", round(took, 2))
    assert service.n_restarts(box) == restarts + 1
    assert box.run(f"systemctl is-active {SERVICE}").stdout.strip() == "active"


def test_watchdog_restarts_a_hung_proxy(box):
    """kill -STOP keeps the PID alive but silent: only the watchdog can notice."""
    record("WatchdogSec", service.show(box, "WatchdogUSec")["WatchdogUSec"])
    service.reset_start_limit(box)
    restarts = service.n_restarts(box)
    took = service.kill_and_recover(box, signal.SIGSTOP, timeout=300)
    record("kill -STOP -> watchdog restart -> healthy s", round(took, 2))
    assert service.n_restarts(box) == restarts + 1
    # The hang dump holds every thread's stack (SERVER_THREADS of them): read past it.
    journal = service.journal(box, 3000)
    assert re.search(r"[Ww]atchdog timeout", journal), journal[-3000:]


def test_every_plugin_the_profile_can_load_loads_under_the_hardened_unit(box, box_upstream):
    """PROXY_PLUGINS set to every plugin the installed profile can import (`all` on full): each one
    loads under the unit (MemoryDenyWriteExecute, read-only venv, BindPaths for spl/mcp), and a
    plugin prefix answers through it."""
    manifest = json.loads((box.root / str(LAYOUT.runtime_manifest()).lstrip("/")).read_text())
    table = json.loads((box.root / str(LAYOUT.current).lstrip("/") / "libexec" / "plugins.json")
                       .read_text())["plugins"]
    loadable = sorted(slug for slug, spec in table.items() if manifest["profile"] in spec["profiles"])
    setting = "all" if len(loadable) == len(table) else ",".join(loadable)
    env_file = box.root / str(LAYOUT.env_file).lstrip("/")
    original = env_file.read_text()
    try:
        env_file.write_text(re.sub(r"(?m)^PROXY_PLUGINS=.*$", f"PROXY_PLUGINS={setting}", original))
        service.reset_start_limit(box)
        old = service.main_pid(box)
        box.check(f"systemctl restart {SERVICE}", timeout=120)
        service.wait_healthy(box, not_pid=old)
        status = service.show(box, "StatusText")["StatusText"]
        loaded = re.search(r"(\d+) plugin\(s\)", status)
        record(f"plugins loaded under the unit ({manifest['profile']} profile)", status.split("; ")[-1])
        assert loaded and int(loaded.group(1)) == len(loadable), status
        invocation = service.show(box, "InvocationID")["InvocationID"]
        journal = box.check(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
        assert "Error loading" not in journal and "Traceback" not in journal, journal[-3000:]
        box_upstream.reset()
        status_code, body = chat(box, f"majority_voting-{BASE_MODEL}")
        assert status_code == 200 and body["choices"][0]["message"]["content"]
        assert box_upstream.calls() and {c["model"] for c in box_upstream.calls()} == {BASE_MODEL}
    finally:
        env_file.write_text(original)
        service.reset_start_limit(box)
        box.run(f"systemctl restart {SERVICE}", timeout=120)
        service.wait_healthy(box)


def test_opsctl_smoke_all_passes_in_the_box(box, box_upstream):
    """`opsctl smoke --all` as an operator runs it on the box (root reads the key file), on
    whichever profile is installed (scripts/test.sh runs this file once per profile)."""
    result = box.run("opsctl smoke --all")
    output = result.stdout + result.stderr
    assert result.rc == 0, output
    summary = re.search(r"(\d+)/(\d+) passed", output)
    assert summary and summary.group(1) == summary.group(2) and int(summary.group(1)) >= 5, output
    record("opsctl smoke --all in the box", summary.group(0))


def test_a_litellm_client_with_an_approach_tag_is_refused_and_told_why(box, box_upstream):
    """Behind the real LiteLLM on :4000: LiteLLM passes the tag through untouched (stock 0.3.12 ran
    cepo, 48 upstream calls, for this moa- request); the proxy in the box refuses it with the rule."""
    box_upstream.reset()
    body = json.dumps({"model": f"moa-{BASE_MODEL}", "max_tokens": 50, "messages": [
        {"role": "system", "content": "<optillm_approach>cepo</optillm_approach>"},
        {"role": "user", "content": "What is 6*7?"}]}).encode()
    req = urllib.request.Request("http://127.0.0.1:4000/v1/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {box.upstream_key}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=120)
    text = refused.value.read().decode(errors="replace")
    assert refused.value.code == 400, text
    assert "refused by optillm-proxy policy (approach-tag)" in text and "remove the tag" in text, text
    assert box_upstream.calls() == []
    journal = box.run(f"journalctl -u {SERVICE} --no-pager -n 200").stdout
    assert "Traceback" not in journal, journal[-3000:]



def test_installers_uv_trusts_the_hosts_certificate_store(box):
    """install.sh's own uv command (its `uv_cmd` function, read from the script) reaches the package
    index from the box with no cache and no certificate variable: what the runtime step of a fresh
    host does. The box's store holds the host's extra CAs, as a company host's would."""
    from tests.box.base import host_ca_certs

    uv = box.check(f"command -v uv || echo {LAYOUT.tools}/uv/bin/uv").strip()
    compile_six = "pip compile --no-cache --python-version 3.11 -q - <<<six==1.16.0"
    trusted = box.run(f"source <(sed -n '/^uv_cmd()/p' /repo/install.sh); UV={uv}; uv_cmd {compile_six}",
                      timeout=120)
    assert trusted.ok and "six==1.16.0" in trusted.stdout, trusted.stderr[-1500:]
    if host_ca_certs():
        # The index is reached through a CA of the host's own: uv's bundled roots fail, so the
        # call above passed because install.sh asks for the host's store.
        bundled = box.run(f"{uv} --no-config {compile_six}", timeout=120)
        assert not bundled.ok and "UnknownIssuer" in bundled.stderr, bundled.stderr[-1500:]


def test_opsctl_install_dry_run_on_the_installed_box_plans_nothing(box):
    """The install as data on a real host: from the checkout, `opsctl install --dry-run --json` (what
    install.sh hands over to) finds nothing to change and restarts nothing on the installed box."""
    from tests.box.machine import INSTALL_ENV

    result = box.run("cd /repo && opsctl install --dry-run --json", env=INSTALL_ENV, timeout=300)
    assert result.rc == 0, result.stdout[-2000:] + result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert (plan["changed"], plan["restart_reasons"], plan["dry_run"]) == ([], [], True), plan
    assert (plan["restarted"], plan["reloaded"]) == (False, False)
