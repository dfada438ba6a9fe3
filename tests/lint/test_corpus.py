"""Table-driven: the good corpus lints clean, every bad case finds exactly its rule."""

from __future__ import annotations

import pytest

from ops.lint.rules import RULES
from tests.lint.corpus import CASES, Case


def test_good_corpus_is_clean(deployment):
    assert deployment.lint() == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_case(deployment, case: Case):
    case.break_it(deployment)
    findings = deployment.lint(process_env=case.process_env)
    rendered = "\n".join(f.render() for f in findings)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not reported; got:\n{rendered}"
    severity = next(r.SEVERITY for r in RULES if r.ID == case.rule)
    assert all(f.severity == severity for f in hits)
    if case.line is not None:
        assert case.line in [f.line for f in hits], rendered
    unexpected = {f.rule for f in findings} - {case.rule, *case.also}
    assert not unexpected, f"unexpected {unexpected}:\n{rendered}"
    for f in hits:
        assert f.message and "\n" not in f.message


def test_every_rule_has_a_bad_case():
    covered = {c.rule for c in CASES}
    # lint-internal is proven by test_engine.py::test_crashing_rule_is_a_finding.
    assert {r.ID for r in RULES} - covered == {"lint-internal"}


def test_dropin_directory_given_directly(deployment):
    """--unit may name the drop-in directory; the unit beside it is read too."""
    dropin = deployment.dropin("50-approach.conf", "[Service]\nExecStart=\n"
                                                   "ExecStart=/usr/bin/optillm --host 0.0.0.0\n")
    from ops.lint import engine
    from ops.lint.context import Context
    import dataclasses

    inputs = dataclasses.replace(deployment.inputs(), unit=dropin.parent)
    rules = {f.rule: f for f in engine.run(Context(inputs, process_env={}))}
    assert rules["host-not-loopback"].path == str(dropin)
    assert "base-url-not-loopback" in rules
