"""Every command the operator docs (DOCS) and install.sh's summary print, and how each is proven.

A printed command is a line of a ```sh block, an inline `sudo ...` span (split at `&&`), or a
command in install.sh's summary. Each one must be in PROOFS, or the fast test fails:
- "box": tests/test_box_printed_commands.py runs it in the booted box exactly as printed;
- "test": it has a placeholder (HOST, FILE, another lock) or needs a state of its own, and the
  named test runs the concrete form: that test's source must contain `text`;
- "ci": it is the developers' own test command, which .ci/run runs (collected here, not re-run).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The operator docs: README, RUNBOOK and every document beside them. A command moved between them
# stays proven; a new document's commands need a proof like any other.
DOCS = ("README.md", "RUNBOOK.md", "ansible/README.md", "bench/README.md",
        *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")))


@dataclass(frozen=True)
class Proof:
    how: str  # "box" | "test" | "ci"
    codes: tuple[int, ...] = (0,)
    test: str = ""  # "tests/test_x.py::test_name" for how="test"
    text: str = ""  # what that test's source contains (the concrete form of the command)
    profile: str = "lean"  # the box profile it runs in, for how="box"
    why: str = ""
    fill: tuple[tuple[str, str], ...] = ()  # a placeholder the operator fills, and what the box test uses

    def as_run(self, command: str) -> str:
        for placeholder, value in self.fill:
            command = command.replace(placeholder, value)
        return command


def _box(*codes: int, profile: str = "lean", fill: tuple[tuple[str, str], ...] = ()) -> Proof:
    return Proof("box", codes or (0,), profile=profile, fill=fill)


def _test(test: str, text: str, why: str) -> Proof:
    return Proof("test", test=test, text=text, why=why)


UPGRADE = "tests/test_box_upgrade.py"
FAULTS = "tests/test_box_faults.py"
EVAL = "tests/eval/test_eval.py"
FLEET = "tests/test_fleet.py"

PROOFS: dict[str, Proof] = {
    # install and first start (README, RUNBOOK 1); the uninstall ones run last, then reinstall
    "sudo ./install.sh": _box(),
    "sudo ./install.sh --dry-run": _box(),
    "sudoedit /etc/optillm-proxy/upstream-key": _box(),
    "sudo ./install.sh --profile full": _box(profile="full"),
    "sudo ./install.sh --uninstall": _test("tests/test_install.py::test_uninstall_keeps_conf_and_state_and_purge_removes_them",
                                           'run_install("--uninstall", "--root"',
                                           "the steps of uninstall.sh and --purge, which run in the box; staged here"),
    "sudo ./install.sh --uninstall --purge": _box(),
    "sudo /opt/optillm-proxy/uninstall.sh": _box(),
    "/opt/optillm-proxy/uninstall.sh": _box(),
    # checks (RUNBOOK 2 and the summary)
    "opsctl health": _box(),
    "sudo opsctl health": _box(),
    "sudo opsctl lint": _box(),
    "sudo opsctl smoke --all": _box(),
    "sudo opsctl runtime check": _box(),
    "sudo opsctl runtime list": _box(),
    "sudo systemctl start optillm-proxy": _box(),
    "sudo systemctl restart optillm-proxy": _test(
        "tests/test_box_no_request_lost.py::test_systemctl_restart_loses_no_request",
        'box_run(box, f"systemctl restart {SERVICE}")', "runs it as root in the box, under load, and asserts exit 0"),
    "sudo systemctl reload optillm-proxy": _test(
        "tests/test_box_reload.py::test_a_reload_hands_over_without_a_pause_and_applies_env_and_key",
        "result = reload(box)", "reload(box) runs it with a changed env file and a request in flight"),
    "sudo tests/testinfra/run.sh --hosts=local://": _test(
        "tests/test_box_testinfra.py::test_deployed_host_suite_passes_in_box", "RUNBOOK_COMMAND",
        "the suite's own box test runs this command (RUNBOOK_COMMAND)"),
    "tests/testinfra/run.sh --hosts=ssh://root@HOST": _test(
        "tests/test_box_testinfra.py::test_deployed_host_suite_passes_in_box", "RUNBOOK_COMMAND",
        "HOST is the operator's; the same script and suite, local backend in the box"),
    # key rotation (RUNBOOK 6)
    "sudo opsctl key rotate": _test(f"{FAULTS}::test_opsctl_key_rotate_refuses_the_old_key_and_accepts_the_new_one",
                                    '"opsctl key rotate"', "it changes the key LiteLLM holds: the fault test puts it back"),
    "sudo cat /etc/optillm-proxy/api-key": _box(),
    # the check through LiteLLM after a rotation: the operator types a key, so one test runs both
    # lines in one shell with the key on stdin
    "read -rsp 'LiteLLM key that may call moa-jerry-xl: ' LITELLM_KEY; echo": _test(
        "tests/test_box_printed_commands.py::test_the_check_through_litellm_as_printed", "THROUGH_LITELLM",
        "it reads a key typed at a prompt: the test gives it on stdin, then runs the curl line in the same shell"),
    ("curl -sS -K <(printf 'header = \"Authorization: Bearer %s\"\\n' \"$LITELLM_KEY\") "
     "-H 'Content-Type: application/json' -d '{\"model\": \"moa-jerry-xl\", \"messages\": [{\"role\": \"user\", "
     "\"content\": \"Say OK.\"}], \"max_tokens\": 16}' -w '\\nHTTP %{http_code}\\n' "
     "http://127.0.0.1:4000/v1/chat/completions"): _test(
        "tests/test_box_printed_commands.py::test_the_check_through_litellm_as_printed", "THROUGH_LITELLM",
        "it needs the key the line before reads: the test runs both lines in one shell"),
    # upgrades (RUNBOOK 7)
    "sudo ./install.sh --upgrade": _box(),
    "sudo ./install.sh --upgrade --profile full": _box(profile="full"),
    "sudo ./install.sh --upgrade /path/other.txt": _test(
        f"{UPGRADE}::test_upgrade_to_a_second_valid_lock_switches_and_serves", 'install_sh(box, "--upgrade", variant)',
        "/path/other.txt is the operator's lock; the test builds a second valid one"),
    "sudo ./install.sh --rollback": _test(f"{UPGRADE}::test_rollback_returns_to_the_previous_runtime_in_one_restart",
                                          'install_sh(box, "--rollback")', "needs a previous runtime, which that test makes"),
    "sudo opsctl runtime prune --keep 1": _box(),
    "sudo opsctl lint --venv <runtime>": _box(fill=(("<runtime>", "/opt/optillm-proxy/current"),)),
    # logs (RUNBOOK 8)
    "journalctl -u optillm-proxy -b": _box(),
    "journalctl -u optillm-proxy -f": _box(124),  # follows until stopped: run under `timeout`
    "systemctl status optillm-proxy": _box(),
    # Prometheus wiring (RUNBOOK 8): run in the box with Debian's prometheus installed there
    "sudo install -D -m 0644 etc/prometheus/optillm-proxy.rules.yml /etc/prometheus/rules/optillm-proxy.rules.yml": _box(),
    "sudoedit /etc/prometheus/prometheus.yml": _box(),
    "sudo promtool check config /etc/prometheus/prometheus.yml": _box(),
    "sudo systemctl reload prometheus": _box(),
    "curl -sG http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up{job=\"optillm-proxy\"}'": _box(),
    # report (RUNBOOK 8)
    "sudo opsctl report": _box(),
    "sudo opsctl report --since yesterday --until today": _box(),
    "sudo opsctl report --since -7d --json": _box(),
    "opsctl report --input records.json": _box(),
    # eval (RUNBOOK 11): a real launcher and a simulated upstream, the shipped task file
    "sudo opsctl eval --tasks eval/tasks.jsonl --model jerry-xl --model majority_voting-jerry-xl --model moa-jerry-xl":
        _test(f"{EVAL}::test_demonstration_simulated_upstream_majority_voting_lift_matches_the_prediction",
              '"PROXY_PLUGINS": "majority_voting"',
              "needs PROXY_PLUGINS=majority_voting; the demonstration runs these models on the shipped tasks"),
    ("OPSCTL_API_KEY=<a LiteLLM key> opsctl eval --tasks my-tasks.jsonl --model jerry-xl --model moa-jerry-xl "
     "--url http://127.0.0.1:4000 --metrics-url http://127.0.0.1:4020 --repeat 2 --plot eval.svg"):
        _test(f"{EVAL}::test_json_shape_resume_and_plot", '"--plot"',
              "a LiteLLM key and the operator's task file: the test runs the same options on its own"),
    "opsctl eval --tasks my-tasks.jsonl --model jerry-xl --model moa-jerry-xl --json":
        _test(f"{EVAL}::test_json_shape_resume_and_plot", '"--json"', "the operator's task file"),
    "uv run --frozen pytest -q -s -m real tests/eval/test_eval.py -k demonstration": Proof("ci"),
    "python3 -m tools.fake_upstream 4000 --simulate eval/tasks.jsonl --p 0.6 --seed 7":
        _test(f"{EVAL}::test_fake_upstream_command_line_serves_the_simulation", "--simulate",
              "it serves until stopped: the test starts it as printed on a free port"),
    # a fleet (RUNBOOK 7a): tests/test_fleet.py runs them from the controller's namespace against two boxes
    "ansible-vault encrypt_string --stdin-name optillm_proxy_upstream_key": _test(
        "tests/fixtures/fleet.py::_write_inventory", '"encrypt_string", "--stdin-name"',
        "the key comes on stdin: the fleet fixture vaults fleet2's upstream key this way"),
    "ansible-playbook -i inventory.yml site.yml --ask-vault-pass": _test(
        f"{FLEET}::test_first_run_installs_both_hosts", 'fleet.playbook("site.yml")',
        "the vault password is read from a file (ANSIBLE_VAULT_PASSWORD_FILE) instead of a prompt"),
    "ansible-playbook -i inventory.yml site.yml --check": _test(
        f"{FLEET}::test_second_run_changes_nothing", 'fleet.playbook("site.yml", "--check")',
        "inventory.yml is the operator's: the test writes one for its two boxes"),
    "ansible-playbook -i inventory.yml site.yml": _test(
        f"{FLEET}::test_first_run_installs_both_hosts", 'fleet.playbook("site.yml")',
        "inventory.yml is the operator's: the test writes one for its two boxes"),
    "tests/testinfra/run.sh --ansible-inventory=ansible/inventory.yml --hosts=ansible://optillm_proxy": _test(
        f"{FLEET}::test_testinfra_suite_passes_on_the_fleet_through_the_inventory", '"--hosts=ansible://optillm_proxy"',
        "the same script with the test's inventory"),
    "ansible-playbook -i inventory.yml upgrade.yml": _test(
        f"{FLEET}::test_a_host_failing_before_the_upgrade_stops_the_rollout_untouched", 'fleet.playbook("upgrade.yml")',
        "the test's inventory; with a lock per host it is the next form"),
    "ansible-playbook -i inventory.yml upgrade.yml -e optillm_proxy_upgrade_lock=/path/next.txt": _test(
        f"{FLEET}::test_rolling_upgrade_stops_at_the_failing_host_which_is_left_healthy", "fleet.upgrade_locks",
        "the lock is set per host in the test's inventory (the variable -e sets for all)"),
    # the developers' test command (README)
    "sudo scripts/test.sh": Proof("ci"),
    "sudo scripts/test.sh tests/probes/test_health.py -x": Proof("ci"),
    "uv run --frozen pytest -m fast -n auto": Proof("ci"),
    "sudo scripts/test-fast-unprivileged.sh": Proof("ci"),  # scripts/test.sh runs it
}

# What a printed command starts with: a program an operator types, or a script.
COMMAND = re.compile(r"^(?:(?:sudo|sudoedit|opsctl|journalctl|systemctl|curl|python3|uv)\s|[A-Z_]+=\S+\s|\S+\.sh(?:\s|$))")


def _normal(line: str) -> str:
    return " ".join(line.split(" #", 1)[0].split())


def _sh_block_lines(text: str) -> list[str]:
    lines, inside, lang = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            inside, lang = (not inside), line[3:].strip()
            continue
        if inside and lang == "sh":
            command = _normal(line)
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _inline_sudo(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for span in re.findall(r"`([^`\n]+)`", prose):
        if span.startswith(("sudo ", "sudoedit ")):
            found += [_normal(part) for part in span.split("&&")]
    return found


def doc_commands() -> dict[str, list[str]]:
    """{command: [where it is printed]} for every document of DOCS."""
    found: dict[str, list[str]] = {}
    for name in DOCS:
        text = (REPO / name).read_text()
        for command in _sh_block_lines(text) + _inline_sudo(text):
            found.setdefault(command, []).append(name)
    return found


def summary_commands(summary: str) -> list[str]:
    """The commands in install.sh's summary: its `label:  value` lines hold `cmd; cmd`, notes in
    parentheses hold `or cmd` / `read with: cmd`."""
    found = []
    for line in summary.splitlines():
        body = re.sub(r"^\s*[a-z ]+:\s{2,}", "", line).strip()
        for part in re.split(r"[;()]", body):
            part = re.sub(r"^(?:[a-z][a-z ]*:\s+|or\s+)", "", part.strip())
            if COMMAND.match(part):
                found.append(_normal(part))
    return found


def source_of(nodeid: str) -> str:
    path, name = nodeid.split("::")
    tree = ast.parse((REPO / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment((REPO / path).read_text(), node) or ""
    raise LookupError(f"{nodeid} does not exist")
