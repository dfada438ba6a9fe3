"""The shipped LiteLLM example (etc/litellm/config.example.yaml) read as files: lint passes it, lint
catches a loop in it, it holds no key, and the chain fixture's rendering moves it off the real
ports. Nothing here starts LiteLLM or optillm (tests/test_chain.py runs the real chain)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from ops.from_launcher.layout import BASE_MODEL, PROXY_URL
from tests.fixtures.litellm import CONFIG, render_config
from tests.probe_helpers import opsctl_bin

REPO = Path(__file__).resolve().parents[1]


def _litellm_findings(config: Path) -> list[dict]:
    """Findings of `opsctl lint --litellm-config` that concern the LiteLLM config, linted against the
    shipped unit (which gives the proxy's port and LiteLLM's address)."""
    proc = subprocess.run([opsctl_bin(), "lint", "--litellm-config", str(config),
                           "--unit", str(REPO / "systemd" / "optillm-proxy.service"), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), f"lint usage error or crash ({proc.returncode}):\n{proc.stderr}"
    findings = json.loads(proc.stdout)
    return [f for f in findings if f["path"] == str(config) or f["rule"].startswith("litellm")]


def test_shipped_litellm_config_lints_clean():
    assert _litellm_findings(CONFIG) == []


def test_lint_catches_a_base_model_routed_back_to_the_proxy(tmp_path):
    """Proves the test above can fail: the same config with the base model sent to the proxy is a loop."""
    config = yaml.safe_load(CONFIG.read_text())
    base = next(e for e in config["model_list"] if e["model_name"] == BASE_MODEL)
    base["litellm_params"]["api_base"] = f"{PROXY_URL}/v1"
    broken = tmp_path / "litellm-config.yaml"
    broken.write_text(yaml.safe_dump(config, sort_keys=False))
    findings = _litellm_findings(broken)
    assert any(f["severity"] == "error" for f in findings), findings


def test_shipped_config_holds_no_key():
    config = yaml.safe_load(CONFIG.read_text())
    keys = [e["litellm_params"]["api_key"] for e in config["model_list"]]
    keys.append(config["general_settings"]["master_key"])
    assert all(str(k).startswith("os.environ/") for k in keys), keys


def test_render_config_moves_every_entry_off_the_real_ports():
    names = [e["model_name"] for e in yaml.safe_load(CONFIG.read_text())["model_list"]]
    rendered = yaml.safe_load(render_config("http://127.0.0.1:1111/v1", "http://127.0.0.1:2222/v1"))
    bases = {e["model_name"]: e["litellm_params"]["api_base"] for e in rendered["model_list"]}
    assert BASE_MODEL in names and len(names) > 1, names
    assert bases == {name: "http://127.0.0.1:1111/v1" if name == BASE_MODEL else "http://127.0.0.1:2222/v1"
                     for name in names}
