"""opsctl lint through click: output format, JSON, exit codes, --strict, --list-rules, --explain."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ops.cli import cli
from ops.lint.rules import RULES

LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+): (?P<rule>[a-z0-9-]+) (?P<severity>error|warning): (?P<msg>.+)$")


def run(args, env=None):
    runner = CliRunner()
    env = {"OPTILLM_API_KEY": None, **(env or {})}
    return runner.invoke(cli, args, env=env, catch_exceptions=False)


def test_clean_deployment_exits_0_with_no_output(deployment):
    result = run(deployment.cli_args())
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "profile=lean" in result.stderr and "optillm=0.3.12" in result.stderr


def test_errors_exit_1_one_parseable_line_each(deployment):
    deployment.replace("unit", "--model jerry-xl", "--model jerry-xl --approach proxy --log debug")
    result = run(deployment.cli_args())
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert {(m["rule"], m["severity"]) for m in parsed} == {("approach-proxy", "error"),
                                                            ("log-debug", "warning")}
    assert all(m["path"] == str(deployment.unit) and m["line"] == "7" for m in parsed)


def test_warning_only_exits_0_and_1_with_strict(deployment):
    deployment.replace("unit", "--model jerry-xl", "--model jerry-xl --log debug")
    assert run(deployment.cli_args()).exit_code == 0
    assert run(deployment.cli_args() + ["--strict"]).exit_code == 1


def test_json_is_the_same_findings_as_a_list(deployment):
    deployment.write("key", "sk-short\n")
    text = run(deployment.cli_args())
    as_json = run(deployment.cli_args() + ["--json"])
    assert as_json.exit_code == text.exit_code == 1
    data = json.loads(as_json.stdout)
    assert [f"{d['path']}:{d['line']}: {d['rule']} {d['severity']}: {d['message']}"
            for d in data] == text.stdout.splitlines()
    assert {d["rule"] for d in data} == {"key-too-short", "key-sk-prefix"}


def test_json_clean_is_empty_list(deployment):
    result = run(deployment.cli_args() + ["--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_optillm_api_key_in_lints_own_environment_warns(deployment):
    result = run(deployment.cli_args(), env={"OPTILLM_API_KEY": "opx-anything"})
    assert result.exit_code == 0
    assert "<environment>:0: process-optillm-api-key warning:" in result.stdout
    assert "opx-anything" not in result.stdout  # never echo a secret
    strict = run(deployment.cli_args() + ["--strict"], env={"OPTILLM_API_KEY": "x"})
    assert strict.exit_code == 1


def test_missing_inputs_are_findings_not_tracebacks(tmp_path):
    missing = tmp_path / "nothing"
    result = run(["lint", "--unit", str(missing / "u.service"), "--env-file", str(missing / "env"),
                  "--key-file", str(missing / "key"), "--upstream-key-file", str(missing / "upstream"),
                  "--proxy-config", str(missing / "p.yaml"),
                  "--litellm-config", str(missing / "l.yaml"), "--venv", str(missing / "venv")])
    assert result.exit_code == 1
    rules = [LINE.match(line)["rule"] for line in result.stdout.splitlines()]
    assert rules.count("file-missing") == 5 and "provider-file-missing" in rules
    assert rules.count("openai-key-missing") == 1  # the LiteLLM key's own rule says it
    assert "Traceback" not in result.output


def test_unreadable_secret_says_run_as_root(deployment):
    import os
    if os.geteuid() == 0:
        # root reads 0000 files; a directory where a file is expected is unreadable for anyone
        deployment.key_file.unlink()
        deployment.key_file.mkdir()
        expected = "is a directory"
    else:
        deployment.key_file.chmod(0)
        expected = "permission denied"
    result = run(deployment.cli_args())
    assert result.exit_code == 1
    assert f"file-unreadable error: key-file: {expected}" in result.stdout


def test_list_rules_lists_every_rule_with_severity():
    result = run(["lint", "--list-rules"])
    assert result.exit_code == 0
    listed = [line.split()[:2] for line in result.stdout.splitlines()]
    assert listed == [[r.ID, r.SEVERITY] for r in RULES]


@pytest.mark.parametrize("rule", RULES, ids=[r.ID for r in RULES])
def test_explain_gives_why_examples_and_fix(rule):
    result = run(["lint", "--explain", rule.ID])
    assert result.exit_code == 0
    for part in ("Why:", "Fails:", "Passes:", "Fix:"):
        assert part in result.stdout, f"{rule.ID} docstring lacks {part}"
    assert result.stdout.startswith(f"{rule.ID} ({rule.SEVERITY})")


def test_rule_ids_are_unique_and_kebab_case():
    ids = [r.ID for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    assert all(r.SEVERITY in ("error", "warning") for r in RULES)


@pytest.mark.parametrize("args", [["lint", "--explain", "no-such-rule"], ["lint", "--bogus"],
                                  ["lint", "--unit"]])
def test_usage_errors_exit_2(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_installed_opsctl_entry_point(deployment):
    """The real console script, as an operator runs it (no click test runner)."""
    deployment.replace("unit", "127.0.0.1 --port", "0.0.0.0 --port")
    proc = subprocess.run([sys.executable, "-c", "from ops.cli import main; main()"]
                          + deployment.cli_args(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "host-not-loopback error: --host 0.0.0.0" in proc.stdout
    assert proc.stderr.startswith("info: runtime ")


def test_markdown_reference_covers_every_rule():
    from ops.lint.docs import markdown

    text = markdown()
    for r in RULES:
        assert f"### `{r.ID}` ({r.SEVERITY})" in text and f"| `{r.ID}` |" in text
