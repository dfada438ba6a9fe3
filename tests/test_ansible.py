"""The playbooks in ansible/ parse (ansible-playbook --syntax-check) and pass ansible-lint, and the
install.sh summary line the role reads for `changed_when` is the one install.sh prints.

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


def _summary(changes: str, reasons: str) -> list[str]:
    """install.sh's print_summary for these CHANGES and RESTART_REASONS (sourced: runs nothing else)."""
    import shlex

    script = (f"source {shlex.quote(str(REPO / 'install.sh'))}; set +u; "
              f"PROFILE=lean RUNTIME_NAME=lean-x SERVICE_STATE=healthy CHANGES=({changes}) NOTES=() "
              f"RESTART_REASONS=({reasons}); print_summary")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


def test_changed_when_reads_the_line_install_sh_prints_when_nothing_changed():
    """The role's changed_when looks for one summary line: install.sh prints it exactly when a run
    changed nothing and restarted nothing, and not when it wrote something or restarted."""
    line = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["optillm_proxy_unchanged_line"]
    assert line in _summary("", "")
    assert line not in _summary("'wrote /etc/optillm-proxy/env from env.example'", "")
    assert line not in _summary("", "env-file")
    marker = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["optillm_proxy_upgrade_noop_marker"]
    assert marker in (REPO / "ops" / "runtime" / "upgrade.py").read_text()


def test_role_paths_match_the_layout():
    from ops.from_launcher.layout import DEFAULT as L
    from ops.from_launcher.layout import SERVICE

    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert role_vars["optillm_proxy_env_file"] == str(L.env_file)
    assert role_vars["optillm_proxy_api_key_path"] == str(L.key_file)
    assert role_vars["optillm_proxy_upstream_key_path"] == str(L.upstream_key_file)
    assert role_vars["optillm_proxy_current_link"] == str(L.current)
    assert role_vars["optillm_proxy_conf_dir"] == str(L.conf_dir)
    assert role_vars["optillm_proxy_service"] == f"{SERVICE}.service"


def test_toolkit_paths_cover_what_install_sh_reads():
    """Every top-level directory install.sh reads from ${REPO} is in what the role copies."""
    import re

    paths = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["optillm_proxy_toolkit_paths"]
    read = set(re.findall(r"\$\{REPO\}/([A-Za-z_.-]+)", (REPO / "install.sh").read_text()))
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
