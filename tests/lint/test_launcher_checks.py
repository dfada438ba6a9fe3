"""The rules that call the launcher's own checks (request-settings, optillm-internals, and the
proxy key rules key-too-short and key-sk-prefix): what they pass and what they refuse, with the
launcher's own message (one implementation of each check)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from optillm_proxy_launcher import patches, settings

from ops.lint.context import Context
from ops.lint.rules import optillm_internals
from tests.lint.corpus import EXEC

REFUSES = "the launcher refuses to start (exit 78): "


def render(findings) -> str:
    return "\n".join(f.render() for f in findings)


def of(findings, rule: str):
    return [f for f in findings if f.rule == rule]


# --- request-settings -------------------------------------------------------------------------


def test_request_settings_in_range_lint_clean(deployment):
    deployment.append("env", "UPSTREAM_TIMEOUT_SECONDS=60\nUPSTREAM_RETRIES=0\n"
                             "REQUEST_DEADLINE_SECONDS=299.5\nMAX_REQUEST_BYTES=1048576\nMAX_N=128\n"
                             "PROXY_APPROACHES=moa, bon,moa&bon,plansearch|bon,majority_voting\n")
    findings = deployment.lint()
    assert findings == [], render(findings)


@pytest.mark.parametrize("line", ["MAX_N=", "UPSTREAM_RETRIES=\"\"", "PROXY_APPROACHES=",
                                  "PROXY_APPROACHES=none", "PROXY_APPROACHES=MOA,Self_Consistency"])
def test_empty_or_default_forms_pass(deployment, line):
    deployment.append("env", line + "\n")
    findings = deployment.lint()
    assert findings == [], render(findings)


def test_every_bad_setting_is_reported_at_its_line_with_the_launchers_text(deployment):
    deployment.append("env", "UPSTREAM_RETRIES=9\nMAX_N=abc\nPROXY_APPROACHES=moa,nosuch\n")
    findings = deployment.lint()
    assert {f.rule for f in findings} == {"request-settings"}, render(findings)
    bound = {b.name: b for b in settings.BOUNDS}
    expected = []
    for line, name, value in ((4, "UPSTREAM_RETRIES", "9"), (5, "MAX_N", "abc")):
        with pytest.raises(settings.ConfigRefused) as refused:
            bound[name].parse({name: value})
        expected.append((line, REFUSES + str(refused.value)))
    with pytest.raises(settings.ConfigRefused) as refused:
        settings.parse_approaches("moa,nosuch", ["majority_voting"], settings.plugin_table())
    expected.append((6, REFUSES + str(refused.value)))
    assert [(f.line, f.message) for f in findings] == expected
    assert all(f.path == str(deployment.env_file) for f in findings)
    assert "UPSTREAM_RETRIES=9 is out of range: set 0..5" in findings[0].message


def test_approach_of_a_plugin_proxy_plugins_does_not_enable(deployment):
    deployment.replace("env", "PROXY_PLUGINS=majority_voting", "PROXY_PLUGINS=none")
    deployment.append("env", "PROXY_APPROACHES=readurls\n")
    findings = deployment.lint(with_litellm=False)
    (finding,) = findings
    assert finding.rule == "request-settings" and finding.line == 4, render(findings)
    assert finding.message.startswith(REFUSES + "PROXY_APPROACHES names plugin 'readurls', which "
                                      "PROXY_PLUGINS does not enable")


def test_all_plugins_enables_every_plugin_approach(deployment):
    deployment.build_runtime(profile="full")
    deployment.replace("env", "PROXY_PLUGINS=majority_voting", "PROXY_PLUGINS=all")
    deployment.append("env", "PROXY_APPROACHES=readurls,json&moa\n")
    findings = deployment.lint()
    assert findings == [], render(findings)


def test_launcher_plugins_flag_counts_as_enabled(deployment):
    deployment.replace("unit", EXEC, EXEC + " --plugins majority_voting,readurls")
    deployment.append("env", "PROXY_APPROACHES=readurls\n")
    findings = deployment.lint()
    assert of(findings, "request-settings") == [], render(findings)


def test_without_a_runtime_the_bundled_plugin_table_is_used(deployment):
    deployment.append("env", "PROXY_APPROACHES=json\n")
    findings = deployment.lint(with_venv=False)
    (finding,) = findings
    assert finding.rule == "request-settings", render(findings)
    assert "names plugin 'json', which PROXY_PLUGINS does not enable" in finding.message
    deployment.replace("env", "PROXY_PLUGINS=majority_voting", "PROXY_PLUGINS=majority_voting,json")
    findings = deployment.lint(with_venv=False, with_litellm=False)
    assert findings == [], render(findings)


# --- optillm-internals ------------------------------------------------------------------------


def test_changed_server_py_names_the_differing_functions(deployment):
    server = deployment.server_py("def get_config():\n    return None, None\n")
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path, finding.line) == ("optillm-internals", str(server), 0)
    with pytest.raises(settings.ConfigRefused) as refused:
        patches.verify_source(server, "0.3.12")
    assert finding.message == REFUSES + str(refused.value)
    assert f"({', '.join(patches.FINGERPRINTS)})" in finding.message


def test_other_version_is_left_to_optillm_version(deployment):
    deployment.build_runtime(dists={"optillm": "0.3.13", "numpy": "1.26.4"})
    deployment.server_py("def get_config():\n    return None, None\n")
    findings = deployment.lint()
    assert {f.rule for f in findings} == {"optillm-version", "lock-unsatisfied"}, render(findings)


def test_no_optillm_no_finding(deployment):
    deployment.build_runtime(dists={"numpy": "1.26.4"})
    assert of(deployment.lint(), "optillm-internals") == []


def real_server_py(runtime: Path) -> str:
    (path,) = runtime.glob("lib/python*/site-packages/optillm/server.py")
    return path.read_text(encoding="utf-8")


@pytest.mark.real
def test_real_runtime_passes(full_runtime, deployment):
    ctx = Context(dataclasses.replace(deployment.inputs(), venv=full_runtime), process_env={})
    assert ctx.runtime.dists["optillm"].version == "0.3.12"
    assert list(optillm_internals.check(ctx)) == []


@pytest.mark.real
def test_real_server_py_unchanged_lints_clean(full_runtime, deployment):
    deployment.server_py(real_server_py(full_runtime))
    findings = deployment.lint()
    assert findings == [], render(findings)


@pytest.mark.real
def test_real_server_py_with_one_function_edited(full_runtime, deployment):
    text = real_server_py(full_runtime)
    edit = 'if request.path == "/health":'
    assert text.count(edit) == 1
    server = deployment.server_py(text.replace(edit, 'if request.path in ("/health", "/v1/models"):'))
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path) == ("optillm-internals", str(server)), render(findings)
    assert finding.message.endswith("differ from 0.3.12 in server.py (check_api_key): this launcher "
                                    "patches optillm 0.3.12 only: reinstall the runtime from the "
                                    "toolkit's locks/")


# --- the proxy key -----------------------------------------------------------------------------
# The deployment keeps the key file under its credential name (api-key): given its directory as
# CREDENTIALS_DIRECTORY, the launcher reads the very file lint reads, so its refusal and lint's
# message must be the same text.


def launcher_refusal(deployment, read) -> str:
    with pytest.raises(settings.ConfigRefused) as refused:
        read({"CREDENTIALS_DIRECTORY": str(deployment.key_file.parent)})
    return str(refused.value)


@pytest.mark.parametrize("text,rule,line", [("\n", "key-too-short", 1),
                                            ("opx-" + "a" * 43 + " b\n", "key-too-short", 1),
                                            ("opx-" + "a" * 43 + "\nb\n", "key-too-short", 2),
                                            ("sk-" + "a" * 43 + "\n", "key-sk-prefix", 1)],
                         ids=["empty", "two-words", "two-lines", "sk"])
def test_proxy_key_refused_by_the_launcher(deployment, text, rule, line):
    deployment.write("key", text)
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path, finding.line) == (rule, str(deployment.key_file), line), \
        render(findings)
    assert finding.message == REFUSES + launcher_refusal(deployment, settings.read_api_key)
