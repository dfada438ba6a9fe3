"""Runtime links, pruning and the upgrade/rollback decisions, on a temp layout without systemd.

The machine is a recording stand-in for `System` (systemctl, systemd-run, opsctl); the booted-box
tests (tests/test_box_upgrade.py) run the same code against a real systemd and a real optillm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ops.runtime import runtimes as rt
from ops.runtime import upgrade as up
from ops.cli import cli
from ops.from_launcher.layout import Layout

UNIT = """\
[Unit]
Description=optillm proxy

[Service]
Type=notify
User=optillm-proxy
ExecStart=/opt/optillm-proxy/current/bin/python -I /opt/optillm-proxy/current/libexec/optillm-proxy-launcher.py \\
    --host 127.0.0.1 --port 4020 --base-url http://127.0.0.1:4000/v1 --model jerry-xl
ExecStartPost=/bin/true
WorkingDirectory=/opt/optillm-proxy
LoadCredential=api-key:/etc/optillm-proxy/api-key
EnvironmentFile=/etc/optillm-proxy/env
ProtectSystem=strict
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
Restart=on-failure
RestartPreventExitStatus=78

[Install]
WantedBy=multi-user.target
"""


def make_runtime(layout: Layout, name: str, profile: str = "lean", mtime: float | None = None) -> Path:
    path = layout.runtimes / name
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("")
    layout.launcher(path).parent.mkdir(parents=True)
    layout.launcher(path).write_text("")
    layout.runtime_manifest(path).write_text(json.dumps(
        {"profile": profile, "optillm_version": "0.3.12", "lock_sha256": name.rsplit("-", 1)[-1] * 5,
         "lock_file": f"locks/{profile}.txt"}))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def layout(tmp_path) -> Layout:
    lay = Layout(tmp_path)
    lay.runtimes.mkdir(parents=True)
    lay.unit_file.parent.mkdir(parents=True)
    lay.unit_file.write_text(UNIT)
    return lay


def names(layout: Layout) -> tuple[str | None, str | None]:
    links = rt.snapshot(layout)
    return (links.current.name if links.current else None, links.previous.name if links.previous else None)


# --- links ------------------------------------------------------------------------------------

def test_activate_moves_current_to_previous_with_relative_links(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    b = make_runtime(layout, "0.3.12-lean-bbbbbbbbbbbb")
    rt.activate(layout, a)
    assert names(layout) == ("0.3.12-lean-aaaaaaaaaaaa", None)
    before = rt.activate(layout, b)
    assert before.current == a and before.previous is None
    assert names(layout) == ("0.3.12-lean-bbbbbbbbbbbb", "0.3.12-lean-aaaaaaaaaaaa")
    assert os.readlink(layout.current) == "runtimes/0.3.12-lean-bbbbbbbbbbbb"
    assert not [p for p in layout.prefix.iterdir() if p.name.startswith(".")], "temp links left behind"


def test_absolute_links_from_an_older_install_are_read(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    os.symlink(a, layout.current)
    assert rt.link_target(layout.current) == a
    assert rt.role(layout, a) == "current"


def test_swap_and_restore(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    b = make_runtime(layout, "0.3.12-full-bbbbbbbbbbbb", profile="full")
    rt.activate(layout, a)
    rt.activate(layout, b)
    before = rt.swap(layout)
    assert names(layout) == ("0.3.12-lean-aaaaaaaaaaaa", "0.3.12-full-bbbbbbbbbbbb")
    rt.restore(layout, before)
    assert names(layout) == ("0.3.12-full-bbbbbbbbbbbb", "0.3.12-lean-aaaaaaaaaaaa")


def test_swap_without_previous_says_so(layout):
    rt.activate(layout, make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa"))
    with pytest.raises(rt.RuntimeProblem, match="nothing to roll back to"):
        rt.swap(layout)


def test_restore_removes_a_previous_that_did_not_exist(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    rt.activate(layout, a)
    before = rt.activate(layout, make_runtime(layout, "0.3.12-lean-bbbbbbbbbbbb"))
    rt.restore(layout, before)
    assert names(layout) == ("0.3.12-lean-aaaaaaaaaaaa", None)
    assert not layout.previous.is_symlink()


def test_resolve_runtime_by_name_and_refuses_outside_paths(layout, tmp_path):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    assert rt.resolve_runtime(layout, a.name) == a
    assert rt.resolve_runtime(layout, str(a)) == a
    with pytest.raises(rt.RuntimeProblem, match="no runtime at"):
        rt.resolve_runtime(layout, "0.3.12-lean-nothere")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(rt.RuntimeProblem, match="is not under"):
        rt.resolve_runtime(layout, str(elsewhere))


def test_check_complete_names_what_is_missing(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa")
    layout.launcher(a).unlink()
    with pytest.raises(rt.RuntimeProblem, match="libexec/optillm-proxy-launcher.py missing"):
        rt.check_complete(layout, rt.load(layout, a))


# --- prune ------------------------------------------------------------------------------------

def test_prune_keeps_current_previous_and_the_newest_others(layout):
    made = [make_runtime(layout, f"0.3.12-lean-{c * 12}", mtime=1_000_000 + i) for i, c in enumerate("abcdef")]
    rt.activate(layout, made[0])  # the oldest is previous: it still must survive
    rt.activate(layout, made[1])
    layout.runtimes.joinpath(".building-x").mkdir()  # a build in progress is not a runtime
    removed = rt.prune(layout, keep=2)
    left = sorted(p.name for p in layout.runtimes.iterdir())
    # keep=2 besides current: previous (a) + the newest other (f)
    assert left == [".building-x", "0.3.12-lean-aaaaaaaaaaaa", "0.3.12-lean-bbbbbbbbbbbb",
                    "0.3.12-lean-ffffffffffff"]
    assert sorted(p.name for p in removed) == [f"0.3.12-lean-{c * 12}" for c in "cde"]


def test_prune_keep_zero_still_keeps_current_and_previous(layout):
    made = [make_runtime(layout, f"0.3.12-lean-{c * 12}", mtime=1_000_000 + i) for i, c in enumerate("abc")]
    rt.activate(layout, made[1])
    rt.activate(layout, made[2])
    rt.prune(layout, keep=0)
    assert sorted(p.name for p in layout.runtimes.iterdir()) == ["0.3.12-lean-bbbbbbbbbbbb", "0.3.12-lean-cccccccccccc"]


def test_cli_list_and_prune_on_a_staged_root(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa", mtime=1_000_000)
    b = make_runtime(layout, "0.3.12-full-bbbbbbbbbbbb", profile="full", mtime=1_000_001)
    rt.activate(layout, a)
    rt.activate(layout, b)
    result = CliRunner().invoke(cli, ["runtime", "list", "--root", str(layout.root)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("current ") and "0.3.12-full-bbbbbbbbbbbb" in lines[0] and "profile=full" in lines[0]
    assert lines[1].startswith("previous") and "0.3.12-lean-aaaaaaaaaaaa" in lines[1]
    result = CliRunner().invoke(cli, ["runtime", "prune", "--root", str(layout.root)])
    assert result.exit_code == 0 and result.output.strip() == "nothing to prune"


# --- the transient validation unit --------------------------------------------------------------

def test_transient_unit_carries_the_hardening_and_swaps_runtime_and_port(layout):
    from ops.runtime.transient_unit import build

    candidate = make_runtime(layout, "0.3.12-full-bbbbbbbbbbbb", profile="full")
    unit = build(layout.unit_file, Path("/opt/optillm-proxy/runtimes/x"), 45123, "optillm-proxy-validate-1")
    argv = unit.systemd_run_argv()
    props = [a.removeprefix("--property=") for a in argv if a.startswith("--property=")]
    assert "User=optillm-proxy" in props and "Type=notify" in props
    assert "LoadCredential=api-key:/etc/optillm-proxy/api-key" in props
    assert "EnvironmentFile=/etc/optillm-proxy/env" in props
    # Both filter lines, in order: the second narrows the first.
    assert props.index("SystemCallFilter=@system-service") < props.index("SystemCallFilter=~@privileged @resources")
    assert "Restart=no" in props and "Restart=on-failure" not in props
    assert not any(p.startswith(("ExecStartPost=", "ExecStart=")) for p in props)
    assert argv[argv.index("--") + 1:] == [
        "/opt/optillm-proxy/runtimes/x/bin/python", "-I",
        "/opt/optillm-proxy/runtimes/x/libexec/optillm-proxy-launcher.py",
        "--host", "127.0.0.1", "--port", "45123", "--base-url", "http://127.0.0.1:4000/v1", "--model", "jerry-xl"]
    assert candidate.exists()


def test_transient_unit_follows_dropins(layout):
    from ops.runtime.transient_unit import build

    layout.dropin_dir.mkdir()
    (layout.dropin_dir / "10-port.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/opt/optillm-proxy/current/bin/python -I x.py --port=4020\n"
        "MemoryMax=2G\n")
    unit = build(layout.unit_file, Path("/r"), 5000, "v")
    assert unit.command == ["/r/bin/python", "-I", "x.py", "--port=5000"]
    assert ("MemoryMax", "2G") in unit.properties


def test_transient_unit_refuses_specifiers(layout):
    from ops.runtime.transient_unit import UnitProblem, build

    layout.unit_file.write_text(UNIT.replace("WorkingDirectory=/opt/optillm-proxy", "WorkingDirectory=%h"))
    with pytest.raises(UnitProblem, match="WorkingDirectory= uses a %-specifier"):
        build(layout.unit_file, Path("/r"), 5000, "v")


# --- upgrade / rollback decisions ----------------------------------------------------------------

class FakeSystem:
    """Records what the upgrader asks of the machine; each check answers from a script."""

    def __init__(self, layout: Layout, *, optillm=None, lint=0, transient=0, smoke_candidate=0, restart_ok=None,
                 health_ok=None):
        self.layout = layout
        self.optillm = optillm  # what the launcher's verification of the candidate's optillm says, None: fine
        self.calls: list[str] = []
        self.lint, self.transient, self.smoke_candidate = lint, transient, smoke_candidate
        # runtime name -> does the real service come up healthy on it
        self.restart_ok = restart_ok or {}
        self.health_ok = health_ok or {}

    def _current(self) -> str:
        return rt.link_target(self.layout.current).name

    def optillm_problem(self, layout, runtime):
        self.calls.append(f"check optillm {runtime.name}")
        return self.optillm

    def opsctl(self, *args, timeout=300.0):
        self.calls.append("opsctl " + " ".join(args))
        if args[0] == "lint":
            return self.lint, "lint: 1 error: something"
        if args[0] == "smoke" and "--url" in args:
            return self.smoke_candidate, "smoke: moa-jerry-xl failed"
        if args[0] in ("health", "smoke"):
            ok = self.health_ok.get(self._current(), True)
            return (0, "OK") if ok else (2, f"CRITICAL on {self._current()}")
        raise AssertionError(args)

    def start_transient(self, argv):
        self.calls.append("systemd-run")
        return self.transient, "Job failed"

    def stop_unit(self, name):
        self.calls.append(f"stop {name.rsplit('-', 1)[0]}")

    def unit_active(self, name):
        return True

    def restart_service(self):
        self.calls.append(f"restart on {self._current()}")
        return (0, "") if self.restart_ok.get(self._current(), True) else (1, "Job failed")

    def main_pid(self):
        return "1"

    def journal(self, unit, since=None):
        return "Started x\nModuleNotFoundError: No module named 'math_verify'\nFailed to start x"

    def healthz(self, url):
        return True

    def sleep(self, s):
        pass


@pytest.fixture
def installed(layout):
    a = make_runtime(layout, "0.3.12-lean-aaaaaaaaaaaa", mtime=1_000_000)
    b = make_runtime(layout, "0.3.12-lean-bbbbbbbbbbbb", mtime=1_000_001)
    rt.activate(layout, a)
    return layout, a, b


def upgrader(layout, system):
    return up.Upgrader(layout, system, say=lambda line: None)


def test_upgrade_validates_then_switches_and_checks(installed):
    layout, a, b = installed
    system = FakeSystem(layout)
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_OK, outcome.message
    assert outcome.changed
    assert names(layout) == (b.name, a.name)
    assert system.calls == [
        f"check optillm {b.name}", f"opsctl lint --venv {b}", "systemd-run", system.calls[3],
        "stop optillm-proxy-validate", f"restart on {b.name}", "opsctl health", "opsctl smoke --all"]
    assert system.calls[3].startswith("opsctl smoke --all --url http://127.0.0.1:")


def test_a_candidate_whose_optillm_the_launcher_refuses_is_refused_first_and_listed(installed):
    """Another optillm (or changed internals): refused before anything starts, with the launcher's
    reasons; `opsctl runtime list` then shows it as refused, and why, until an upgrade passes."""
    layout, a, b = installed
    why = ("optillm 0.4.0 is installed, not 0.3.12; patch points that differ: "
           "server.get_config (server.py:proxy)")
    system = FakeSystem(layout, optillm=why)
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_REFUSED
    assert outcome.message == f"refused {b.name} at validation, optillm-proxy untouched: {why}"
    assert system.calls == [f"check optillm {b.name}"]
    assert names(layout) == (a.name, None)
    listed = CliRunner().invoke(cli, ["runtime", "list", "--root", str(layout.root)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    at = next(i for i, line in enumerate(lines) if b.name in line)
    assert lines[at].startswith(f"refused  {b.name}  profile=lean")
    assert lines[at + 1].strip().startswith("refused at validation 2") and lines[at + 1].endswith(why)
    assert lines[at + 2].startswith(f"current  {a.name}")
    # Validated later (the same runtime, fixed): no longer listed as refused.
    assert upgrader(layout, FakeSystem(layout)).upgrade(b).code == up.EXIT_OK
    assert rt.load(layout, b).refusal is None


@pytest.mark.parametrize("failing", ["lint", "transient", "smoke_candidate"])
def test_a_candidate_failing_validation_is_refused_and_the_service_untouched(installed, failing):
    layout, a, b = installed
    system = FakeSystem(layout, **{failing: 1})
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_REFUSED and not outcome.changed
    assert outcome.message.startswith(f"refused {b.name} at validation, optillm-proxy untouched: ")
    assert names(layout) == (a.name, None)
    assert not any(c.startswith("restart") for c in system.calls)
    if failing == "transient":
        assert "No module named 'math_verify'" in outcome.message
        assert system.calls[-1] == "stop optillm-proxy-validate"


def test_failure_after_switch_switches_back_by_itself(installed):
    layout, a, b = installed
    system = FakeSystem(layout, health_ok={b.name: False})
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_ROLLED_BACK and outcome.changed  # restarted twice
    assert f"switched back to {a.name}, which is serving and healthy" in outcome.message
    assert f"opsctl health exited 2 on {b.name}" in outcome.message
    assert names(layout) == (a.name, None)
    assert [c for c in system.calls if c.startswith("restart")] == [f"restart on {b.name}", f"restart on {a.name}"]


def test_failure_after_switch_and_failed_switch_back_is_exit_4(installed):
    layout, a, b = installed
    system = FakeSystem(layout, restart_ok={a.name: False, b.name: False})
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_DOWN
    assert "ALSO failed" in outcome.message
    assert names(layout) == (a.name, None)


def test_upgrade_to_current_is_a_no_op(installed):
    layout, a, _ = installed
    system = FakeSystem(layout)
    outcome = upgrader(layout, system).upgrade(a)
    assert outcome.code == up.EXIT_OK and "already current" in outcome.message and not outcome.changed
    assert system.calls == []


def test_upgrade_prunes_beyond_keep(installed):
    layout, a, b = installed
    old = [make_runtime(layout, f"0.3.12-lean-{c * 12}", mtime=900_000 + i) for i, c in enumerate("cde")]
    outcome = upgrader(layout, FakeSystem(layout)).upgrade(b)
    assert outcome.code == up.EXIT_OK
    assert "pruned" in outcome.message
    left = {p.name for p in layout.runtimes.iterdir()}
    assert left == {a.name, b.name, old[-1].name}


def test_rollback_swaps_in_one_restart(installed):
    layout, a, b = installed
    rt.activate(layout, b)
    system = FakeSystem(layout)
    outcome = upgrader(layout, system).rollback()
    assert outcome.code == up.EXIT_OK and outcome.changed
    assert names(layout) == (a.name, b.name)
    assert [c for c in system.calls if c.startswith("restart")] == [f"restart on {a.name}"]


def test_rollback_to_a_broken_previous_switches_back(installed):
    layout, a, b = installed
    rt.activate(layout, b)
    system = FakeSystem(layout, restart_ok={a.name: False})
    outcome = upgrader(layout, system).rollback()
    assert outcome.code == up.EXIT_ROLLED_BACK
    assert outcome.message.startswith(f"rollback to {a.name} failed: systemctl restart optillm-proxy failed")
    assert names(layout) == (b.name, a.name)


def test_exclusive_refuses_a_second_switch(layout):
    first = up.exclusive(layout)
    try:
        with pytest.raises(up.Busy, match="another upgrade or rollback is running"):
            up.exclusive(layout)
    finally:
        first.close()


def test_journal_prefers_what_the_service_wrote_over_systemd_lines(monkeypatch):
    lines = [json.dumps({"MESSAGE": m, "SYSLOG_IDENTIFIER": ident}) for m, ident in [
        ("Starting optillm-proxy.service...", "systemd"),
        ("test runtime: refusing the live port 4020 on purpose", "python"),
        ("optillm-proxy.service: Main process exited, code=exited, status=1/FAILURE", "systemd"),
        ("Failed to start optillm-proxy.service - OptiLLM inference proxy.", "systemd")]]
    system = up.System(opsctl=["opsctl"])
    monkeypatch.setattr(system, "run", lambda argv, timeout: (0, "\n".join(lines) + "\n"))
    assert up._reason_from_journal(system.journal("optillm-proxy")) == \
        "test runtime: refusing the live port 4020 on purpose"
    monkeypatch.setattr(system, "run", lambda argv, timeout: (0, "\n".join(lines[2:]) + "\n"))
    assert "status=1/FAILURE" in up._reason_from_journal(system.journal("optillm-proxy"))


def test_reason_is_the_last_error_line():
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'math_verify'\n"
    assert up._reason_from_journal(log) == "ModuleNotFoundError: No module named 'math_verify'"


# --- opsctl runtime: one-line errors, documented exit codes ------------------------------------

@pytest.fixture
def deployed(layout, monkeypatch):
    """`layout` standing in for / (what upgrade/rollback act on), as root would run the CLI: the
    root check is test_cli_needs_root's; these run as any user."""
    monkeypatch.setattr("ops.from_launcher.layout.DEFAULT", layout)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    return layout


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl runtime: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_upgrade_of_an_unknown_runtime_is_exit_2(deployed):
    rt.activate(deployed, make_runtime(deployed, "0.3.12-lean-aaaaaaaaaaaa"))
    result = CliRunner().invoke(cli, ["runtime", "upgrade", "0.3.12-lean-nothere"])
    assert result.exit_code == 2
    assert "no runtime at" in one_line_error(result)


def test_cli_rollback_without_previous_is_exit_2(deployed):
    rt.activate(deployed, make_runtime(deployed, "0.3.12-lean-aaaaaaaaaaaa"))
    result = CliRunner().invoke(cli, ["runtime", "rollback"])
    assert result.exit_code == 2
    assert "nothing to roll back to" in one_line_error(result)


def test_cli_json_is_one_object_on_stdout_and_the_line_on_stderr(deployed):
    import json

    a = make_runtime(deployed, "0.3.12-lean-aaaaaaaaaaaa")
    rt.activate(deployed, a)
    result = CliRunner().invoke(cli, ["runtime", "rollback", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"exit_code": 2, "changed": False, "current": a.name, "previous": None,
                                         "message": result.stderr.strip().removeprefix("opsctl runtime: ")}
    assert "nothing to roll back to" in result.stderr
    done = CliRunner().invoke(cli, ["runtime", "upgrade", "--json", a.name])
    assert done.exit_code == 0 and json.loads(done.stdout)["changed"] is False
    assert "already current" in done.stderr


def test_cli_without_an_installed_unit_is_exit_2(deployed):
    deployed.unit_file.unlink()
    result = CliRunner().invoke(cli, ["runtime", "rollback"])
    assert result.exit_code == 2
    assert "run install.sh first" in one_line_error(result)


def test_cli_refuses_a_second_switch_while_one_runs(deployed):
    held = up.exclusive(deployed)
    try:
        result = CliRunner().invoke(cli, ["runtime", "rollback"])
    finally:
        held.close()
    assert result.exit_code == 2
    assert "another upgrade or rollback is running" in one_line_error(result)


def test_cli_needs_root(deployed, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["runtime", "rollback"])
    assert result.exit_code == 2
    assert "must run as root" in one_line_error(result)


def test_cli_list_says_when_there_is_nothing(layout):
    result = CliRunner().invoke(cli, ["runtime", "list", "--root", str(layout.root)])
    assert result.exit_code == 0 and "no runtimes under" in result.output


def test_health_warning_after_the_switch_is_healthy_enough(installed):
    layout, a, b = installed
    system = FakeSystem(layout)
    real_opsctl = system.opsctl
    system.opsctl = lambda *args, **kw: (1, "WARNING: slower than 1s") if args[0] == "health" else real_opsctl(*args, **kw)
    assert upgrader(layout, system).upgrade(b).code == up.EXIT_OK


def test_an_unexpected_error_after_the_switch_still_switches_back(installed):
    layout, a, b = installed
    system = FakeSystem(layout)
    calls = {"n": 0}

    def smoke_raises_once(*args, **kw):
        if args[0] == "smoke" and "--url" not in args and calls["n"] == 0:
            calls["n"] += 1
            raise OSError("disk full")
        return FakeSystem.opsctl(system, *args, **kw)

    system.opsctl = smoke_raises_once
    outcome = upgrader(layout, system).upgrade(b)
    assert outcome.code == up.EXIT_ROLLED_BACK
    assert "internal error after the switch: OSError: disk full" in outcome.message
    assert names(layout) == (a.name, None)


def test_the_upgrade_verifies_a_real_runtime_as_the_launcher_does(layout, lean_runtime):
    """System.optillm_problem on a real runtime (a hardlinked copy): none as built; with proxy()
    edited, the launcher's refusal naming the patch points relying on it."""
    import shutil
    import subprocess

    copy = layout.runtimes / "0.3.12-lean-cccccccccccc"
    subprocess.run(["cp", "-al", str(lean_runtime), str(copy)], check=True)
    try:
        make_manifest = make_runtime(layout, "0.3.12-lean-dddddddddddd")
        shutil.copy(layout.runtime_manifest(make_manifest), layout.runtime_manifest(copy))
        runtime = rt.load(layout, copy)
        assert up.System().optillm_problem(layout, runtime) is None
        [server_py] = copy.glob("lib/python3*/site-packages/optillm/server.py")
        text = server_py.read_text()
        server_py.unlink()  # a hardlink: never write through it into the cached runtime
        server_py.write_text(text.replace("    data = request.get_json()\n", "    data = request.get_json(silent=True)\n"))
        problem = up.System().optillm_problem(layout, runtime)
        assert problem == ("optillm's internals differ from 0.3.12 at patch points "
                           "server.get_config, server.OpenAI, server.app.wsgi_app, server.app.view_functions (server.py:proxy): "
                           "this launcher "
                           "patches optillm 0.3.12 only: reinstall the runtime from the toolkit's locks/ (what "
                           "changed: tools/audit_optillm.py 0.3.12, docs/upgrading-optillm.md)")
    finally:
        shutil.rmtree(copy)
