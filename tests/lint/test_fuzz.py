"""Property-based fuzzing: no input, however broken, makes a parser or a lint run crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.lint import engine
from ops.lint.context import Context
from ops.lint.readers.envfile import _NAME, parse_env_file
from ops.lint.readers.execstart import parse_exec_start
from ops.lint.readers.runtime import parse_lock, parse_metadata
from ops.lint.readers.unitfile import UnitFile, environment_assignments, parse_unit_text
from ops.lint.readers.yamlfile import YamlError, load_yaml
from tests.lint.deployment import GOOD, LOCK, Deployment

FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def lines_of(*texts: str) -> list[str]:
    return [line for t in texts for line in t.splitlines()]


SYSTEMD_LIKE = lines_of((GOOD / "optillm-proxy.service").read_text(), (GOOD / "env").read_text(),
                        LOCK) + ["[", "]", "=", "\\", '"', "'", "#", ";", "export A=1", "ExecStart=",
                                 "--approach", "--host", "--port=x", "A='b", 'B="c\\'] 
# Mostly-plausible text reaches deeper states than uniform noise; noise still gets its turn.
plausible_text = st.lists(st.one_of(st.sampled_from(SYSTEMD_LIKE), st.text(max_size=40)),
                          max_size=25).map("\n".join)
any_text = st.one_of(st.text(), plausible_text)


@FAST
@given(any_text)
def test_env_parser_never_raises_and_keeps_only_valid_names(text):
    env = parse_env_file(text)
    assert all(_NAME.match(a.key) for a in env.assignments)
    n_lines = text.count("\n") + 1
    assert all(1 <= line <= n_lines for line, _ in env.problems)


_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
                 max_size=30)


@FAST
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), _value,
                       max_size=6))
def test_env_parser_reads_back_double_quoted_values(variables):
    """What systemd's double-quote rules promise: \\ escapes " \\ ` $ and nothing else."""
    def quote(v: str) -> str:
        return '"' + "".join("\\" + c if c in '"\\`$' else c for c in v) + '"'

    text = "".join(f"{k}={quote(v)}\n" for k, v in variables.items())
    env = parse_env_file(text)
    assert env.as_dict() == variables
    assert env.problems == []


@FAST
@given(any_text)
def test_unit_parser_never_raises(text):
    unit = UnitFile()
    parse_unit_text(text, "u.service", unit)
    for d in unit.directives:
        assert d.key and "\n" not in d.value
        environment_assignments(d.value)


@FAST
@given(st.one_of(any_text, st.lists(st.sampled_from(
    ["python3", "-I", "-m", "optillm", "launcher.py", "--plugins", "--host", "0.0.0.0", "--port",
     "--approach", "proxy", "--appr=auto", "--optillm-api-key", "--base_url", "'", '"', "--",
     "--n", "--ba", "x"]), max_size=12).map(" ".join)))
def test_exec_start_parser_never_raises(text):
    cmd = parse_exec_start(text)
    assert cmd.form in ("launcher", "optillm", "optillm-module", "unknown")


@FAST
@given(any_text)
def test_yaml_reader_raises_only_yaml_error(text):
    try:
        load_yaml(text)
    except YamlError as exc:
        assert exc.line >= 1 and exc.message


@FAST
@given(any_text)
def test_lock_and_metadata_parsers_never_raise(text):
    lock = parse_lock(text)
    assert all(e.name for e in lock.entries)
    parse_metadata(text)


# Structured YAML: right keys, wrong shapes (lists for dicts, ints for URLs, ...).
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                   st.sampled_from(["http://127.0.0.1:4020/v1", "http://127.0.0.1:4000/v1",
                                    "openai/moa-jerry-xl", "openai/jerry-xl", "jerry-xl",
                                    "readurls-jerry-xl", "${OPENAI_API_KEY}", "${X:-http://[::1]:1}",
                                    "http://[bad", "https://example.com"]))
keys = st.sampled_from(["providers", "base_url", "api_key", "name", "model_list", "model_name",
                        "litellm_params", "model", "api_base", "routing"])
structured = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
yaml_text = st.one_of(structured.map(lambda o: yaml.safe_dump(o)), any_text)


@SLOW
@given(unit=any_text, env=any_text, key=any_text, upstream=any_text, provider=yaml_text,
       litellm=yaml_text, metadata=any_text, lock=any_text, manifest=any_text)
def test_whole_lint_run_never_crashes(unit, env, key, upstream, provider, litellm, metadata, lock,
                                      manifest):
    with tempfile.TemporaryDirectory() as tmp:
        d = Deployment(Path(tmp) / "d")
        d.write("unit", unit)
        d.write("env", env)
        d.write("key", key)
        d.write("upstream", upstream)
        d.write("provider", provider)
        d.write("litellm", litellm)
        d.write("manifest", manifest)
        (d.venv / "libexec" / "lean.txt").write_text(lock)
        next((d.venv / "lib").rglob("METADATA")).write_text(metadata)
        findings = engine.run(Context(d.inputs(), process_env={}))
        assert not [f for f in findings if f.rule == "lint-internal"], findings
        for f in findings:
            assert "\n" not in f.render()


@SLOW
@given(structured)
def test_litellm_rules_survive_any_structure(data):
    with tempfile.TemporaryDirectory() as tmp:
        d = Deployment(Path(tmp) / "d")
        d.write("litellm", yaml.safe_dump({"model_list": data}))
        d.write("provider", yaml.safe_dump({"providers": data}))
        findings = engine.run(Context(d.inputs(), process_env={}))
        assert not [f for f in findings if f.rule == "lint-internal"], findings


def test_names_with_newlines_stay_on_one_line(deployment):
    deployment.write("provider", 'providers:\n  - name: "evil\\nname\\x1b[31m"\n'
                                 "    base_url: https://example.com/v1\n")
    findings = deployment.lint()
    (f,) = [f for f in findings if f.rule == "provider-not-loopback"]
    assert "\n" not in f.render() and "\x1b" not in f.render()
    assert "evil\\nname" in f.message
