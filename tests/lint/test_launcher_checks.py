"""The rules that call the launcher's own checks (request-settings, optillm-internals, and the key
rules: openai-key-missing, upstream-key-in-env-file, key-too-short, key-sk-prefix): what they pass
and what they refuse, with the launcher's own message (one implementation of each check)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from optillm_proxy_launcher import patches, settings

from ops.lint.context import Context
from ops.lint.readers.envfile import parse_env_file
from ops.lint.rules import optillm_internals
from tests.lint.corpus import EXEC
from tests.lint.deployment import LOCK

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
    # A server.py binding get_config alone: the other points' names are gone, get_config's differs.
    assert "server.load_plugins (gone), server.get_config, server.OpenAI (gone)" in finding.message
    assert "(server.py:get_config, server.py:proxy, server.py:proxy_models, plugins:SLUG" not in finding.message
    assert "(server.py:get_config, server.py:proxy, server.py:proxy_models)" in finding.message


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
    deployment.adopt_packages(full_runtime)
    deployment.server_py(real_server_py(full_runtime))
    findings = deployment.lint()
    assert findings == [], render(findings)


@pytest.mark.real
def test_real_server_py_with_one_function_edited(full_runtime, deployment):
    deployment.adopt_packages(full_runtime)
    text = real_server_py(full_runtime)
    edit = 'if request.path == "/health":'
    assert text.count(edit) == 1
    server = deployment.server_py(text.replace(edit, 'if request.path in ("/health", "/v1/models"):'))
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path) == ("optillm-internals", str(server)), render(findings)
    assert finding.message.endswith("differ from 0.3.12 at patch points server.app.wsgi_app, "
                                    "server.app.view_functions (server.py:check_api_key): this launcher "
                                    "patches optillm 0.3.12 only: reinstall the runtime from the "
                                    "toolkit's locks/")


# --- the two keys -----------------------------------------------------------------------------
# The deployment keeps both key files in one directory under their credential names (api-key,
# upstream-key): given as CREDENTIALS_DIRECTORY, the launcher reads the very files lint reads, so
# its refusal and lint's message must be the same text.


def launcher_refusal(deployment, read, environ=None) -> str:
    with pytest.raises(settings.ConfigRefused) as refused:
        read({"CREDENTIALS_DIRECTORY": str(deployment.key_file.parent)} if environ is None else environ)
    return str(refused.value)


@pytest.mark.parametrize("text,line", [("", 1), (" \n\n", 1), ("sk-litellm virtual\n", 1),
                                       ("sk-litellm\nsk-second\n", 2),
                                       (settings.UPSTREAM_KEY_PLACEHOLDER + "\n", 1)],
                         ids=["empty", "blank", "two-words", "two-lines", "placeholder"])
def test_upstream_key_refused_by_the_launcher_is_openai_key_missing(deployment, text, line):
    deployment.write("upstream", text)
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path, finding.line) == (
        "openai-key-missing", str(deployment.upstream_key_file), line), render(findings)
    assert finding.message == REFUSES + launcher_refusal(deployment, settings.upstream_key)


def test_missing_upstream_key_file_is_openai_key_missing_not_file_missing(deployment):
    deployment.upstream_key_file.unlink()
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.line) == ("openai-key-missing", 0), render(findings)
    # systemd refuses the start (243/CREDENTIALS) before the launcher runs; lint says it in the
    # launcher's words for a credential file that is not there.
    assert finding.message == ("the service will not start: " + str(settings.credential_missing(
        deployment.upstream_key_file, settings.UPSTREAM_CREDENTIAL_NAME, settings.UPSTREAM_KEY_FILE_HINT,
        settings.UPSTREAM_KEY_WHAT)))
    assert "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key" in finding.message


def test_unreadable_upstream_key_file_is_file_unreadable_only(deployment):
    import os
    if os.geteuid() == 0:  # root reads a 0000 file; a directory is unreadable for anyone
        deployment.upstream_key_file.unlink()
        deployment.upstream_key_file.mkdir()
    else:
        deployment.upstream_key_file.chmod(0)
    findings = deployment.lint()
    assert [f.rule for f in findings] == ["file-unreadable"], render(findings)
    assert findings[0].message.startswith("upstream-key-file: ")


@pytest.mark.parametrize("text", ["sk-litellm-virtual-key\n", "  sk-litellm-virtual-key  \n\n",
                                  "short"])
def test_upstream_key_the_launcher_accepts_lints_clean(deployment, text):
    """sk- is a LiteLLM virtual key's form (only the proxy key must avoid it); the LiteLLM key's
    strength is LiteLLM's business: no length rule."""
    deployment.write("upstream", text)
    findings = deployment.lint()
    assert findings == [], render(findings)
    assert settings.upstream_key({"CREDENTIALS_DIRECTORY": str(deployment.key_file.parent)})


def test_openai_api_key_in_env_file_is_the_launchers_refusal_without_the_value(deployment):
    deployment.append("env", "OPENAI_API_KEY=sk-secret-value\n")
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path, finding.line) == (
        "upstream-key-in-env-file", str(deployment.env_file), 4), render(findings)
    with pytest.raises(settings.ConfigRefused) as refused:
        settings.check_environment(parse_env_file(deployment.env_file.read_text()).as_dict())
    assert finding.message == REFUSES + str(refused.value)
    assert "install.sh moves it for you" in finding.message
    assert "sk-secret-value" not in finding.message


def test_each_openai_api_key_line_is_reported(deployment):
    deployment.append("env", "OPENAI_API_KEY=a\nPROXY_RECORDS=off\nOPENAI_API_KEY=b\n")
    findings = deployment.lint()
    assert {(f.rule, f.line) for f in findings} == {("upstream-key-in-env-file", 4),
                                                   ("upstream-key-in-env-file", 6),
                                                   ("env-syntax", 6)}, render(findings)


def test_unit_without_upstream_credential(deployment):
    deployment.replace("unit", "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key\n", "")
    findings = deployment.lint()
    (finding,) = findings
    assert (finding.rule, finding.path, finding.line) == ("key-not-loaded", str(deployment.unit), 7)
    assert "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key" in finding.message


def test_unit_without_either_credential_says_both(deployment):
    deployment.replace("unit", "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key\n", "")
    deployment.replace("unit", "LoadCredential=api-key:/etc/optillm-proxy/api-key\n", "")
    findings = deployment.lint()
    assert [f.rule for f in findings] == ["key-not-loaded"] * 2, render(findings)
    assert {f.message for f in findings} == {
        REFUSES + launcher_refusal(deployment, settings.read_api_key, {}),
        REFUSES + launcher_refusal(deployment, settings.upstream_key, {})}


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


# --- per-Python knowledge: the runtime's Python and the lock it was built from --------------------


def on_python(deployment, python: str) -> None:
    """The stub runtime as if built by a host whose python3 is `python` (its lib/pythonX.Y)."""
    sp = deployment.site_packages
    sp.parent.rename(sp.parent.with_name(f"python{python}"))


def test_a_full_only_plugin_on_python_3_13_says_there_is_no_full_profile_there(deployment):
    """The launcher's refusal (its check_profile) names the reason from plugins.json, not
    "install the full profile", which install.sh would refuse on 3.13; lint says the same."""
    on_python(deployment, "3.13")
    deployment.replace("env", "PROXY_PLUGINS=majority_voting", "PROXY_PLUGINS=majority_voting,json")
    (finding,) = of(deployment.lint(), "plugin-not-in-profile")
    assert "plugin(s) json cannot be imported by this runtime's 'lean' profile: there is no full profile " \
           "for Python 3.13 (optillm 0.3.12 requires spacy<3.8" in finding.message
    assert "install the full profile" not in finding.message
    table = settings.plugin_table()
    with pytest.raises(settings.ConfigRefused) as refused:
        settings.check_profile(["json"], table, "lean", "3.13", settings.plugin_pythons())
    assert finding.message.endswith(str(refused.value))
    with pytest.raises(settings.ConfigRefused, match="install the full profile or set PROXY_PLUGINS"):
        settings.check_profile(["json"], table, "lean", "3.11", settings.plugin_pythons())


def test_the_launcher_takes_the_python_from_the_manifest(tmp_path):
    manifest = tmp_path / "optillm-proxy-runtime.json"
    manifest.write_text('{"profile": "lean", "python": "3.13"}')
    assert settings.runtime_python(manifest) == "3.13"
    assert settings.runtime_python(tmp_path / "absent.json").count(".") == 1  # this interpreter's


def test_a_lock_resolved_for_another_python_is_flagged(deployment):
    """lock-unsatisfied compares the lock's `# Target: CPython X.Y` with the runtime's Python."""
    deployment.build_runtime(lock="# Target: CPython 3.13\n" + LOCK)
    (finding,) = of(deployment.lint(), "lock-unsatisfied")
    assert finding.message.startswith("the lock targets Python 3.13, the runtime runs 3.11")
    assert "locks/py3.11/" in finding.message
