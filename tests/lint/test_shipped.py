"""The project's own files lint clean: the shipped unit and env.example, and everything
`./install.sh --root DIR` generates, its real lean runtime (built from locks/lean.txt) included,
once the LiteLLM key install.sh cannot invent is written. Then the real runtime is broken the
way operators break it, and lint notices."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from optillm_proxy_launcher import settings

from ops.from_launcher.layout import UPSTREAM_URL, Layout
from ops.lint import engine
from ops.lint.context import Context, Inputs
from tests.fixtures.litellm import CONFIG as LITELLM_CONFIG
from tests.fixtures.runtime import write_provider_file
from tests.lint.deployment import REPO, UPSTREAM_KEY, generated_key

SHIPPED_UNIT = REPO / "systemd" / "optillm-proxy.service"
ENV_EXAMPLE = REPO / "etc" / "optillm-proxy" / "env.example"
INSTALL = REPO / "install.sh"


def render(findings) -> str:
    return "\n".join(f.render() for f in findings)


def written_upstream_key(directory: Path) -> Path:
    """The LiteLLM key as the operator writes it (install.sh's note: one line, root 0600)."""
    path = directory / "upstream-key"
    path.write_text(UPSTREAM_KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Layout:
    """A whole deployment staged by the real installer (about 40 s with a warm uv cache)."""
    for needed in (SHIPPED_UNIT, ENV_EXAMPLE, INSTALL):
        if not needed.exists():
            pytest.fail(f"{needed.relative_to(REPO)} is missing: it is shipped by the repo")
    if shutil.which("uv") is None:
        pytest.fail("uv is not on PATH: run scripts/test.sh (it installs uv 0.13.9)")
    root = tmp_path_factory.mktemp("staged")
    env = {k: v for k, v in os.environ.items() if k != "OPTILLM_API_KEY"}
    proc = subprocess.run([str(INSTALL), "--root", str(root), "--no-start"], env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"./install.sh --root failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    yield Layout(root)
    shutil.rmtree(root, ignore_errors=True)


def test_shipped_unit_and_env_example_lint_clean(tmp_path):
    """env.example as shipped (no secret to fill in: the LiteLLM key is the upstream key file)."""
    env = tmp_path / "env"
    env.write_text(ENV_EXAMPLE.read_text())
    key = tmp_path / "api-key"
    key.write_text(generated_key() + "\n")
    home = tmp_path / "home" / ".optillm"
    write_provider_file(tmp_path / "home", UPSTREAM_URL)
    for secret in (env, key):
        secret.chmod(0o600)
    inputs = Inputs(unit=SHIPPED_UNIT, env_file=env, key_file=key,
                    upstream_key_file=written_upstream_key(tmp_path),
                    proxy_config=home / "proxy_config.yaml")
    findings = engine.run(Context(inputs, process_env={}))
    assert findings == [], render(findings)


def test_what_install_sh_generates_lints_clean(staged, tmp_path):
    ctx = Context(Inputs.defaults(staged), process_env={})
    assert ctx.inputs.venv == staged.current  # the default: the current runtime
    assert ctx.inputs.upstream_key_file == staged.upstream_key_file
    findings = engine.run(ctx)
    # install.sh cannot invent the LiteLLM key: it leaves a note (and no key, or an empty 0600
    # file to fill in) and does not start the service without it. That absence is the one
    # finding, in the launcher's words (the staged conf dir holds the file under its credential
    # name), and only until the key is written.
    assert [(f.rule, f.path) for f in findings] == [
        ("openai-key-missing", str(staged.upstream_key_file))], render(findings)
    with pytest.raises(settings.ConfigRefused) as refused:
        settings.upstream_key({"CREDENTIALS_DIRECTORY": str(staged.upstream_key_file.parent)})
    assert findings[0].message.endswith(str(refused.value))
    keyed = Inputs.defaults(staged, upstream_key_file=written_upstream_key(tmp_path))
    findings = engine.run(Context(keyed, process_env={}))
    assert findings == [], render(findings)
    assert ctx.runtime.profile == "lean"
    assert len(ctx.runtime.dists) > 40  # a real runtime, not a stub
    assert "profile=lean optillm=0.3.12" in engine.profile_line(ctx)


def test_generated_key_has_the_contract_form(staged):
    key = staged.key_file.read_text().strip()
    assert key.startswith("opx-") and len(key) == 4 + 43


def test_real_runtime_with_a_package_removed_is_caught(staged, tmp_path):
    """`uv pip uninstall` in a copy of the real runtime: the lock is no longer satisfied."""
    runtime = tmp_path / "runtime"
    shutil.copytree(staged.current.resolve(), runtime, symlinks=True)
    subprocess.run(["uv", "pip", "uninstall", "-q", "--python", str(runtime / "bin" / "python"),
                    "math-verify"], check=True, capture_output=True)
    inputs = Inputs.defaults(staged, venv=runtime, upstream_key_file=written_upstream_key(tmp_path))
    findings = engine.run(Context(inputs, process_env={}))
    (finding,) = findings
    assert finding.rule == "lock-unsatisfied"
    assert finding.path == str(runtime / "libexec" / "lean.txt")
    assert "math-verify 0.8.0 is locked but not installed" in finding.message


def test_plugin_the_real_lean_runtime_cannot_import(staged, tmp_path):
    env = tmp_path / "env"
    env.write_text(staged.env_file.read_text().replace("PROXY_PLUGINS=none",
                                                        "PROXY_PLUGINS=executecode"))
    env.chmod(0o600)
    inputs = Inputs.defaults(staged, env_file=env, upstream_key_file=written_upstream_key(tmp_path))
    findings = engine.run(Context(inputs, process_env={}))
    assert [f.rule for f in findings] == ["plugin-not-in-profile"], render(findings)
    assert "plugin(s) executecode cannot be imported by this runtime's 'lean' profile" in findings[0].message




def _litellm_findings(path: Path, env: Path):
    inputs = Inputs(unit=SHIPPED_UNIT, env_file=env, key_file=env, upstream_key_file=env,
                    proxy_config=env, litellm_config=path)
    return [f for f in engine.run(Context(inputs, process_env={})) if f.rule.startswith("litellm-")]


def test_shipped_litellm_config_lints_clean_and_its_loop_variant_does_not(tmp_path):
    """The LiteLLM example the RUNBOOK points to (and the chain tests run for real)."""
    if not LITELLM_CONFIG.exists():
        pytest.fail(f"{LITELLM_CONFIG.relative_to(REPO)} is missing (shipped by the chain work)")
    env = tmp_path / "env"
    env.write_text("PROXY_PLUGINS=none\n")
    assert _litellm_findings(LITELLM_CONFIG, env) == []
    looped = tmp_path / "litellm.yaml"
    looped.write_text(LITELLM_CONFIG.read_text().replace("http://127.0.0.1:8000/v1",
                                                         "http://127.0.0.1:4020/v1", 1))
    findings = _litellm_findings(looped, env)
    assert {f.rule for f in findings} == {"litellm-unprefixed-to-proxy", "litellm-routing-loop"}
    loop = next(f for f in findings if f.rule == "litellm-routing-loop")
    assert "jerry-xl -> [proxy] jerry-xl" in loop.message
