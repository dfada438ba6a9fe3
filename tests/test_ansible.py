"""The playbooks in ansible/ parse (ansible-playbook --syntax-check) and pass ansible-lint, and the
role reads install.sh's outcome from its --json object and every deployed path from layout.env.

No network, no root: fast tier. The playbooks run for real against booted boxes in tests/test_fleet.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = REPO / "ansible"
ROLE = ANSIBLE_DIR / "roles" / "optillm_proxy"
VENV_BIN = Path(sys.executable).parent
PLAYBOOKS = ("site.yml", "upgrade.yml")


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_HOME": str(tmp_path / ".ansible"),
            "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"no {name} in {VENV_BIN}: run `uv sync --frozen` (it is in the dev group of uv.lock)")
    return str(path)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook, tmp_path):
    proc = subprocess.run([_tool("ansible-playbook"), "-i", "inventory.example.yml", "--syntax-check", playbook],
                          cwd=ANSIBLE_DIR, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_syntax_check_fails_on_a_broken_playbook(tmp_path):
    """The check above can fail: a task with an unknown module is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - name: x\n      no_such_module_here: {}\n")
    proc = subprocess.run([_tool("ansible-playbook"), "-i", "localhost,", "--syntax-check", str(broken)],
                          cwd=ANSIBLE_DIR, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode != 0


def test_ansible_lint_passes(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor", *PLAYBOOKS],
                          cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Passed" in proc.stdout + proc.stderr


def test_every_task_that_touches_a_key_has_no_log():
    for path in (ROLE / "tasks").glob("*.yml"):
        for task in yaml.safe_load(path.read_text()) or []:
            text = yaml.safe_dump(task)
            if "_key" in text and ("copy" in text or "content" in text):
                assert task.get("no_log") is True, f"{path.name}: task {task.get('name')!r} touches a key without no_log"


def _install_outcome(changes: list[str], reasons: list[str]) -> tuple[dict, str]:
    """install.sh's --json object and summary (ops.install.summary) for these changes and restart reasons."""
    from ops.install.options import parse
    from ops.install.run import Run
    from ops.install.summary import outcome, summary

    run = Run(parse([], environ={}), profile="lean", runtime_name="lean-x", lock_shown="locks/x.txt", lock_sha="abc",
              health="running", service_state="running", changes=list(changes), restart_reasons=list(reasons),
              has_systemd=True)
    return outcome(run), summary(run)


def _task(tasks_file: str, task_name: str) -> dict:
    def find(tasks):
        for task in tasks:
            if task.get("name") == task_name:
                return task
            found = find(task.get("block", []))
            if found:
                return found
        return None

    return find(yaml.safe_load((ROLE / "tasks" / tasks_file).read_text()))


def _jinja():
    import json

    import jinja2

    env = jinja2.Environment()
    env.filters["from_json"] = json.loads
    env.filters["basename"] = os.path.basename
    return env


def _changed_when(tasks_file: str, task_name: str, register: str, stdout: str) -> bool:
    """A task's changed_when, evaluated by Jinja2 as Ansible does, on this stdout."""
    expression = _task(tasks_file, task_name)["changed_when"]
    return bool(_jinja().compile_expression(expression)(**{register: {"stdout": stdout}}))


def _parsed_by_install_sh(argv: list[str]) -> dict[str, str]:
    """What install.sh's parser (ops.install.options) makes of argv."""
    from ops.install.options import parse

    opts = parse(argv[1:], environ={}, cwd="/")
    return {"UPGRADE": "1" if opts.upgrade else "", "UPGRADE_LOCK": opts.upgrade_lock, "JSON": "1" if opts.json else "",
            "DRY_RUN": "1" if opts.dry_run else ""}


def _role_changed(stdout: str) -> bool:
    return _changed_when("install.yml", "Run install.sh", "optillm_proxy_install", stdout)


@pytest.mark.parametrize("changes, reasons, changed", [
    ([], [], False),
    (["wrote /etc/optillm-proxy/env from env.example"], [], True),
    ([], ["env-file"], True),
    (["optillm-proxy restarted (changed: key-file)"], ["key-file"], True),
])
def test_the_role_reads_changed_from_install_sh_json(changes, reasons, changed):
    """install.sh --json's `changed` is empty exactly when its summary says nothing changed, and
    the role's changed_when follows it (no prose read)."""
    import json

    out, summary = _install_outcome(changes, reasons)
    out = json.loads(json.dumps(out))
    assert (out["changed"] != []) is changed
    assert ("changed:   nothing (no change; nothing restarted)" in summary) is not changed
    assert _role_changed(json.dumps(out)) is changed
    assert _role_changed("") is False  # install.sh stopped before its summary: the failure task says why


def test_the_rolling_upgrade_reads_changed_from_opsctl_runtime_json():
    """install.sh --upgrade --json hands opsctl runtime's object through: a switch is a change, an
    already current runtime is not, and a run stopped before opsctl printed nothing."""
    import json

    def changed(stdout):
        return _changed_when("upgrade.yml", "Run install.sh --upgrade", "optillm_proxy_upgrade", stdout)

    base = {"exit_code": 0, "message": "", "current": "b", "previous": "a"}
    assert changed(json.dumps({**base, "changed": True})) is True
    assert changed(json.dumps({**base, "changed": False})) is False
    assert changed("") is False


@pytest.mark.parametrize("lock", ["", "/srv/locks/next.txt"])
def test_install_sh_reads_the_argv_the_role_passes(lock):
    """The argv the install and upgrade tasks render, as install.sh's own parser reads it: --json
    always, and --upgrade's optional LOCK where the role puts it."""
    def argv(tasks_file, task_name, **values):
        expression = _task(tasks_file, task_name)["ansible.builtin.command"]["argv"].strip()[2:-2]
        return _jinja().compile_expression(expression)(**values)

    upgrade = argv("upgrade.yml", "Run install.sh --upgrade", optillm_proxy_upgrade_lock=lock,
                   optillm_proxy_toolkit_dir="/usr/local/lib/toolkit")
    parsed = _parsed_by_install_sh(upgrade)
    assert parsed["UPGRADE"] == "1" and parsed["JSON"] == "1", upgrade
    assert parsed["UPGRADE_LOCK"] == ("/usr/local/lib/toolkit-locks/next.txt" if lock else ""), upgrade
    for check_mode in (False, True):
        install = argv("install.yml", "Run install.sh", optillm_proxy_profile="lean", ansible_check_mode=check_mode)
        parsed = _parsed_by_install_sh(install)
        assert parsed["JSON"] == "1" and parsed["UPGRADE"] == "" and parsed["DRY_RUN"] == ("1" if check_mode else "")


def test_role_layout_is_generated_from_layout_env():
    """vars/main/layout.yml is what tools/gen_layout_vars.py writes from layout.env, the role
    loads it, and no deployed path is written anywhere else in the role."""
    from ops.from_launcher.layout import FACTS

    check = subprocess.run([sys.executable, str(REPO / "tools" / "gen_layout_vars.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert yaml.safe_load((ROLE / "vars" / "main" / "layout.yml").read_text())["optillm_proxy_layout"] == FACTS
    paths = {v for k, v in FACTS.items() if v.startswith("/")}
    for path in [*(ROLE / "tasks").glob("*.yml"), *(ROLE / "templates").iterdir(), ROLE / "vars" / "main" / "role.yml",
                 ROLE / "handlers" / "main.yml"]:
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        assert not [p for p in paths if p in code], f"{path.relative_to(ROLE)} spells a deployed path"


def test_toolkit_paths_cover_what_install_sh_reads():
    """Every top-level directory install.sh reads from ${REPO} is in what the role copies."""
    import re

    paths = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["optillm_proxy_toolkit_paths"]
    read = set(re.findall(r"\$\{REPO\}/([A-Za-z_.-]+)", (REPO / "install.sh").read_text()))
    # ... and what opsctl install reads from the checkout it is handed (run.repo / "..." in ops/install/).
    for module in (REPO / "ops" / "install").glob("*.py"):
        read |= set(re.findall(r"\b(?:repo|checkout) / \"([A-Za-z_.-]+)\"", module.read_text()))
    assert {"launcher", "locks", "systemd", "etc", "uninstall.sh.in"} <= read, read
    tops = {p.split("/")[0] for p in paths}
    assert read <= tops, f"install.sh reads {sorted(read - tops)} which the role does not copy"
    assert os.path.exists(REPO / "install.sh")


def test_fleet_doc_names_real_playbooks_and_variables():
    """Every playbook ansible/README.md runs exists, every role variable it names is one of the role's."""
    import re

    runbook = (ANSIBLE_DIR / "README.md").read_text()
    played = {word for line in re.findall(r"ansible-playbook [^\n#]*", runbook)
              for word in line.split() if word.endswith(".yml") and word != "inventory.yml"}
    assert played == set(PLAYBOOKS), played
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    named = set(re.findall(r"\boptillm_proxy_[a-z_]+", runbook))
    unknown = {name for name in named if name not in defaults}
    assert not unknown, f"ansible/README.md names role variables that do not exist: {sorted(unknown)}"
    inventory_example = yaml.safe_load((ANSIBLE_DIR / "inventory.example.yml").read_text())
    assert "hosts" in inventory_example["optillm_proxy"]


@pytest.mark.parametrize("acceptance", ["/usr/local/sbin/site-acceptance", [["true"], ["a", {"b": 1}]]],
                         ids=["a-string", "a-mapping-in-an-argv"])
def test_upgrade_refuses_a_malformed_acceptance_test_before_touching_the_host(acceptance, tmp_path):
    """upgrade.yml's first task, on localhost (no host is touched, no root needed): a value that
    is not a list of argv lists stops the host with what is expected, before its checks run.
    The acceptance test itself runs against booted boxes in tests/test_fleet.py."""
    import json

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"optillm_proxy": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False}}}}))
    proc = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), "upgrade.yml",
                           "-e", json.dumps({"optillm_proxy_upgrade_acceptance": acceptance})],
                          cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=300,
                          # the "remote" temp dir too under tmp_path: as nobody, ~ is not writable
                          env={**_env(tmp_path), "ANSIBLE_REMOTE_TMP": str(tmp_path / "remote-tmp")})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert "optillm_proxy_upgrade_acceptance must be a list of commands" in output, output[-4000:]
    assert "opsctl health" not in output, output[-4000:]
