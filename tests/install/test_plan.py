"""opsctl install's plan, without root, uv or a runtime build (fast tier): each step against a
--root layout whose runtime is a stand-in (a manifest naming the lock, bin/python this
interpreter). tests/test_install.py runs the real install.sh --root as the integration proof, and
the box tests run it on a booted host."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.from_launcher.layout import FACTS, OPTILLM_VERSION, Layout
from ops.install import options
from ops.install.main import INSTALL_STEPS
from ops.install.run import Run
from tests.fixtures.runtime import python_version
from tests.test_install import snapshot as tree

REPO = Path(__file__).resolve().parents[2]
NO_CHANGE_LINE = "changed:   nothing (no change; nothing restarted)"


def lock() -> Path:
    return REPO / "locks" / f"py{python_version()}" / "lean.txt"


def runtime_name() -> str:
    return f"{OPTILLM_VERSION}-lean-{hashlib.sha256(lock().read_bytes()).hexdigest()[:12]}"


def opsctl_install(root: Path, *args: str) -> subprocess.CompletedProcess:
    """ops.install.main as install.sh runs a dry run (the system Python's view: stdlib only)."""
    return subprocess.run([sys.executable, "-I", "-m", "ops.install.main", f"--toolkit={REPO}", "--root", str(root),
                           "--profile", "lean", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{REPO}/launcher"})


def stand_in_runtime(root: Path) -> Path:
    """A runtime as build_runtime leaves it, without its 100 packages: the manifest that says the
    lock is built, bin/python (this interpreter: the launcher step compiles with it)."""
    runtime = Layout(root).runtimes / runtime_name()
    (runtime / "bin").mkdir(parents=True)
    (runtime / "bin" / "python").symlink_to(sys.executable)
    (runtime / "lib" / f"python{python_version()}" / "site-packages").mkdir(parents=True)
    manifest = {"profile": "lean", "optillm_version": OPTILLM_VERSION,
                "lock_sha256": hashlib.sha256(lock().read_bytes()).hexdigest(), "lock_file": "libexec/lean.txt",
                "lock_source": str(lock().relative_to(REPO)), "python": python_version()}
    (runtime / FACTS["MANIFEST_REL"]).write_text(json.dumps(manifest) + "\n")
    return runtime


@pytest.fixture
def installed(tmp_path) -> Layout:
    root = tmp_path / "root"
    root.mkdir()
    stand_in_runtime(root)
    first = opsctl_install(root)
    assert first.returncode == 0, first.stdout + first.stderr
    return Layout(root)


def json_plan(root: Path, *args: str) -> dict:
    proc = opsctl_install(root, "--dry-run", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_dry_run_on_an_empty_root_lists_every_step_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    plan = json_plan(root)
    assert tree(root) == {}
    wanted = [f"would: install {FACTS['SYSUSERS_FILE']}", f"would: install {FACTS['TMPFILES_FILE']}",
              f"would: build {runtime_name()} from {lock().relative_to(REPO)}",
              f"would: point current at runtimes/{runtime_name()}",
              f"would: write {FACTS['PROVIDER_FILE']} (LiteLLM on loopback only)",
              f"would: write {FACTS['ENV_FILE']} from etc/optillm-proxy/env.example",
              f"would: generate the proxy key into {FACTS['KEY_FILE']}",
              f"would: install {FACTS['UNIT_FILE']}", f"would: install {FACTS['SOCKET_FILE']}"]
    assert [item for item in wanted if item not in plan["changed"]] == []
    assert any(item.startswith("would: make /opt/optillm-proxy") for item in plan["changed"])
    assert any(item.startswith(f"would: install launcher files in {runtime_name()}/libexec") for item in plan["changed"])
    assert plan["restart_reasons"] == ["first-install", "files this run would write"]
    assert (plan["dry_run"], plan["health"], plan["exit_code"], plan["root"]) == (True, "staged", 0, str(root))


def test_a_dry_run_on_an_installed_root_lists_nothing_and_writes_nothing(installed):
    before = tree(installed.root)
    plan = json_plan(installed.root)
    assert (plan["changed"], plan["restart_reasons"], plan["restarted"]) == ([], [], False)
    assert tree(installed.root) == before


def test_the_first_run_applies_every_step_and_the_second_changes_nothing(installed):
    lay = installed
    assert os.readlink(lay.current) == f"runtimes/{runtime_name()}"
    assert (lay.current / "libexec" / "optillm_proxy_launcher" / "layout.env").is_file()
    assert list((lay.current / "libexec" / "optillm_proxy_launcher" / "__pycache__").glob("main.*.pyc"))
    assert os.readlink(lay.site_packages()) == f"lib/python{python_version()}/site-packages"
    for secret in (lay.env_file, lay.key_file, lay.upstream_key_file, lay.install_state):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    assert lay.key_file.read_text().startswith("opx-")
    before = tree(lay.root)
    again = opsctl_install(lay.root)
    assert again.returncode == 0, again.stderr
    assert NO_CHANGE_LINE in again.stdout and "change detection: nothing the service depends on changed" in again.stdout
    assert tree(lay.root) == before


def test_an_edited_env_file_is_a_restart_reason_and_is_kept(installed):
    lay = installed
    text = lay.env_file.read_text() + "UPSTREAM_RETRIES=2\n"
    lay.env_file.write_text(text)
    assert json_plan(lay.root)["restart_reasons"] == ["env-file"]
    real = opsctl_install(lay.root, "--json")
    out = json.loads(real.stdout)
    assert out["changed"] == ["nothing written by install.sh (changed since the last run: env-file)"]
    assert lay.env_file.read_text() == text
    assert json_plan(lay.root)["restart_reasons"] == []


def test_the_upstream_key_moves_out_of_an_old_env_file_and_is_in_no_output(installed):
    lay = installed
    secret = "litellm-virtual-key-of-the-operator-0123"
    lay.upstream_key_file.unlink()
    lay.env_file.write_text(f"# the operator's own\nOPENAI_API_KEY={secret}\n")
    plan = json_plan(lay.root)
    assert f"would: move OPENAI_API_KEY from {FACTS['ENV_FILE']} into {FACTS['UPSTREAM_KEY_FILE']}" in plan["changed"]
    run = opsctl_install(lay.root)
    assert run.returncode == 0 and secret not in run.stdout + run.stderr
    assert lay.upstream_key_file.read_text() == secret + "\n"
    assert secret not in lay.env_file.read_text()


def test_a_loose_key_mode_is_tightened_and_an_sk_key_is_named(installed):
    lay = installed
    lay.key_file.write_text("sk-operator-key\n")
    lay.key_file.chmod(0o644)
    run = opsctl_install(lay.root)
    assert f"mode of {FACTS['KEY_FILE']} set to 0600" in run.stdout
    assert f"{FACTS['KEY_FILE']} starts with 'sk-'" in run.stdout
    assert lay.key_file.read_text() == "sk-operator-key\n" and lay.key_file.stat().st_mode & 0o777 == 0o600


def test_a_missing_unit_in_the_checkout_is_a_note_when_staged(installed, tmp_path):
    from ops.install.steps import install_unit

    checkout = tmp_path / "checkout"
    (checkout / "systemd").mkdir(parents=True)
    run = Run(options.parse([f"--toolkit={checkout}", "--root", str(installed.root)], environ={}))
    install_unit(run)
    assert run.notes == [f"systemd/{Path(FACTS['UNIT_FILE']).name} was missing: not installed",
                         f"systemd/{Path(FACTS['SOCKET_FILE']).name} was missing: not installed"]


def test_every_step_names_itself_before_it_looks_at_the_host(tmp_path):
    """The steps table (RUNBOOK, tools/gen_docs.py) and a failure's message rest on it."""
    class Named(Exception):
        pass

    class Naming(Run):
        def step(self, name, hint):
            raise Named(name)

    names = []
    for step in INSTALL_STEPS:
        with pytest.raises(Named) as named:
            step(Naming(options.parse(["--root", str(tmp_path / "nothing")], environ={}), profile="lean"))
        names.append(named.value.args[0])
    assert len(names) == len(set(names)) == len(INSTALL_STEPS)
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("argv, code, message", [
    (["--bogus"], 2, "unknown argument '--bogus' (see ./install.sh --help)"),
    (["--profile"], 2, "--profile needs a value: lean or full"),
    (["--upgrade", "--rollback"], 2, "--upgrade and --rollback are two separate runs"),
])
def test_usage_errors_are_one_line(argv, code, message, capsys):
    from ops.install.main import main

    assert main(argv) == code
    assert capsys.readouterr().err == f"install.sh: {message}\n"


def test_opsctl_install_away_from_the_toolkit_says_where_to_run_it(tmp_path, capsys):
    from ops.install.main import main

    assert main([f"--toolkit={tmp_path}", "--root", str(tmp_path / "root")]) == 2
    assert capsys.readouterr().err == ("install.sh: opsctl install runs from the toolkit: cd to its checkout first "
                                       "(or give it: opsctl install --toolkit=DIR); a first install is "
                                       "sudo ./install.sh\n")
    assert not (tmp_path / "root").exists()


def test_opsctl_install_in_the_toolkit_s_directory_plans_from_it(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert options.parse([], environ={}).checkout == REPO
    monkeypatch.chdir(tmp_path)
    assert options.parse([f"--toolkit={REPO}"], environ={}).checkout == REPO


def test_help_is_install_sh_s_and_names_the_locks_directory_away_from_a_checkout(tmp_path):
    here, away = options.usage(REPO), options.usage(tmp_path)
    assert here.startswith("Usage: sudo ./install.sh") and "Exit codes:" in here
    assert f"no lock for /usr/bin/python3's version ({options.supported_pythons(REPO)})" in here
    assert "no lock for /usr/bin/python3's version (locks/py<X.Y>/ in the toolkit)" in away


def test_the_runtime_is_built_with_the_flags_install_sh_builds_opsctl_with():
    """The box proves install.sh's uv_cmd trusts the host's certificate store
    (tests/test_box_unit.py); the runtime build passes the same flags."""
    from ops.install.runtime import UV_FLAGS

    line = next(line for line in (REPO / "install.sh").read_text().splitlines() if line.startswith("uv_cmd()"))
    assert f'"${{UV}}" {" ".join(UV_FLAGS)} "$@"' in line, line


def test_the_ops_install_package_but_its_click_command_is_stdlib_only():
    """install.sh runs it with the system Python before anything is installed."""
    probe = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/launcher']; import ops.install.main, "
             "ops.install.options, ops.install.templates, ops.runtime.keys, ops.runtime.install_state; "
             # site's own hooks are the interpreter's, not imports of ours (Debian's python3 ships one)
             "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
             " - {'__main__', 'sitecustomize', 'usercustomize'}))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(REPO)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ops', 'optillm_proxy_launcher']", out.stdout


@pytest.mark.parametrize("code, reloaded, health, exit_code", [(0, True, "healthy", 0), (1, False, "refused", 6)])
def test_the_json_says_reloaded_only_when_the_reload_applied_the_change(monkeypatch, tmp_path, code, reloaded, health,
                                                                         exit_code):
    """An env change on a running service is a reload (ops.runtime.service.restart); when the running
    launcher refuses it, nothing was applied: `reloaded` false, `health` refused, exit 6."""
    from ops.install import service, summary
    from ops.runtime.service import Applied

    run = Run(options.parse([f"--toolkit={Path(__file__).resolve().parents[2]}"], environ={}), profile="lean")
    run.has_systemd, run.restart_reasons = True, ["env-file"]
    monkeypatch.setattr(service, "systemctl", lambda *args, **kw: True)  # enabled, active
    monkeypatch.setattr(service, "sh", lambda *args, **kw: None)
    monkeypatch.setattr(service, "configuration_accepted", lambda run: True)
    monkeypatch.setattr(service, "restart", lambda layout, reasons: (Applied("reloaded", code, "refused: because"), []))
    service.start_service(run)
    out = summary.outcome(run)
    assert (out["reloaded"], out["restarted"], out["health"], out["exit_code"]) == (reloaded, False, health, exit_code)
