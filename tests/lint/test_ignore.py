"""`opsctl lint --ignore RULE` and the lint config's `ignored:` list: what an operator may accept,
what never goes quiet (a start the launcher refuses), and the one-line usage errors (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ops.cli import cli
from ops.lint.ignore import REFUSED_START, not_ignorable
from ops.lint.rules import RULES
from tests.lint.corpus import CASES, EXEC
from tests.lint.test_refusals import CASES as REFUSALS


def run(args):
    return CliRunner().invoke(cli, args, env={"OPTILLM_API_KEY": None}, catch_exceptions=False)


def fixed_approach(deployment) -> None:
    deployment.replace("unit", EXEC, EXEC + " --approach moa")  # approach-fixed, a warning


def test_ignore_accepts_a_warning(deployment):
    fixed_approach(deployment)
    assert run(deployment.cli_args() + ["--strict"]).exit_code == 1
    result = run(deployment.cli_args() + ["--strict", "--ignore", "approach-fixed"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "info: ignored rule(s) approach-fixed (1 finding(s) not shown)" in result.stderr


def test_ignore_accepts_an_error_the_launcher_starts_with(deployment):
    deployment.replace("unit", "--host 127.0.0.1", "--host 0.0.0.0")  # host-not-loopback: serves anyway
    deployment.replace("socket", "ListenStream=127.0.0.1:4020", "ListenStream=0.0.0.0:4020")
    assert run(deployment.cli_args()).exit_code == 1
    result = run(deployment.cli_args() + ["--ignore", "host-not-loopback"])
    assert result.exit_code == 0, result.output


def test_config_file_ignored_list(deployment, tmp_path):
    fixed_approach(deployment)
    config = tmp_path / "lint.yaml"
    config.write_text("# accepted on this host\nignored:\n  - approach-fixed\n")
    result = run(deployment.cli_args() + ["--strict", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"; from {config})" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--ignore", "approach-fixd"], "--ignore approach-fixd: no rule 'approach-fixd'; `opsctl lint --list-rules`"),
    (["--ignore", "key-sk-prefix"], "--ignore key-sk-prefix: key-sk-prefix cannot be ignored: the launcher refuses "
                                    "to start on what it reports, so ignoring it would not make the service start"),
])
def test_bad_ignore_is_one_line_exit_2(deployment, args, message):
    result = run(deployment.cli_args() + args)
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"opsctl lint: {message}"), line


@pytest.mark.parametrize("text, message", [
    ("ignored:\n  - approach-fixed\n  - nosuch\n", ":3: no rule 'nosuch'"),
    ("ignored:\n  - request-settings\n", ":2: request-settings cannot be ignored"),
    ("ignored: approach-fixed\n", "`ignored:` must be a list of rule IDs"),
    ("ignore:\n  - approach-fixed\n", "expected only `ignored:`"),
    ("ignored: [\n", "lint config"),
])
def test_bad_config_file_is_one_line_exit_2(deployment, tmp_path, text, message):
    config = tmp_path / "lint.yaml"
    config.write_text(text)
    result = run(deployment.cli_args() + ["--config", str(config)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"opsctl lint: lint config {config}") and message in line, line


def test_explicit_config_must_exist(deployment, tmp_path):
    result = run(deployment.cli_args() + ["--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_an_ignored_rule_still_reports_a_refused_start(deployment):
    """key-too-short is lint's own bar (ignorable) and, for an empty key, the launcher's refusal."""
    deployment.write("key", "opx-short\n")
    assert run(deployment.cli_args() + ["--ignore", "key-too-short"]).exit_code == 0
    deployment.write("key", "\n")
    result = run(deployment.cli_args() + ["--ignore", "key-too-short"])
    assert result.exit_code == 1
    assert "key-too-short error: the launcher refuses to start (exit 78)" in result.stdout


def _findings_of(deployment, break_it, rule):
    """The rule's findings, for a unit that runs the launcher (a plain `optillm` ExecStart has no
    launcher to refuse: the rule states the same fact without REFUSES)."""
    from ops.lint.context import Context

    break_it(deployment)
    es = Context(deployment.inputs(), process_env={}).exec_start
    if es is not None and es.command.form != "launcher":
        return None
    return [f for f in deployment.lint() if f.rule == rule]


BROKEN = [(c.id, c.break_it, c.rule) for c in CASES if c.rule in not_ignorable()] + \
         [(c.id, c.break_it, c.rule) for c in REFUSALS if c.rule in not_ignorable()]


@pytest.mark.parametrize("case_id, break_it, rule", BROKEN, ids=[b[0] for b in BROKEN])
def test_unignorable_rules_report_only_refused_starts(tmp_path, case_id, break_it, rule):
    """REFUSES_START is true of a rule: each finding it makes says the start is refused."""
    from tests.lint.deployment import Deployment

    findings = _findings_of(Deployment(tmp_path / "d"), break_it, rule)
    if findings is None:
        return
    assert findings
    assert all(f.message.startswith(REFUSED_START) for f in findings), [f.message for f in findings]


def test_every_unignorable_rule_is_exercised():
    assert not_ignorable() <= {b[2] for b in BROKEN}
    assert not_ignorable() < {r.ID for r in RULES}
