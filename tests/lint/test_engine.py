"""Engine behaviour no corpus file can trigger."""

from __future__ import annotations

from types import SimpleNamespace

from ops.lint import engine
from ops.lint.context import Context


def test_crashing_rule_is_a_finding_and_others_still_run(deployment, monkeypatch):
    def boom(ctx):
        raise KeyError("surprise")
        yield  # pragma: no cover

    broken = SimpleNamespace(ID="approach-proxy", SEVERITY="error", check=boom, __doc__="x")
    rules = tuple(broken if r.ID == "approach-proxy" else r for r in engine.RULES)
    monkeypatch.setattr(engine, "RULES", rules)
    deployment.write("key", "short\n")
    findings = engine.run(Context(deployment.inputs(), process_env={}))
    assert {f.rule for f in findings} == {"lint-internal", "key-too-short"}
    internal = next(f for f in findings if f.rule == "lint-internal")
    assert "approach-proxy crashed (KeyError" in internal.message
    assert engine.exit_code(findings, strict=False) == 1


def test_default_paths_come_from_layout(tmp_path):
    from ops.from_launcher.layout import Layout
    from ops.lint.context import Inputs

    layout = Layout(tmp_path)
    inputs = Inputs.defaults(layout)
    assert inputs.unit == layout.unit_file and inputs.env_file == layout.env_file
    assert inputs.key_file == layout.key_file and inputs.proxy_config == layout.provider_file
    assert inputs.upstream_key_file == layout.upstream_key_file
    assert inputs.venv is None and inputs.litellm_config is None  # no current runtime: skipped
    layout.current.mkdir(parents=True)
    assert Inputs.defaults(layout).venv == layout.current
