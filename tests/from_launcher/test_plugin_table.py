"""Where opsctl reads the plugin table (ops.from_launcher.plugins): beside the launcher package in a checkout,
else the installed runtime's, as in opsctl's own venv, which gets the package without the table."""

from __future__ import annotations

import json

import pytest
from optillm_proxy_launcher import settings

import ops.from_launcher.layout
import ops.from_launcher.plugins
from ops.from_launcher.layout import Layout


@pytest.fixture(autouse=True)
def fresh_cache():
    ops.from_launcher.plugins.table.cache_clear()
    yield
    ops.from_launcher.plugins.table.cache_clear()


def test_a_checkout_reads_launcher_plugins_json():
    assert ops.from_launcher.plugins.table() == json.loads(settings.PLUGIN_TABLE.read_text())["plugins"]


def without_the_shipped_table(monkeypatch, tmp_path):
    real = settings.plugin_table
    monkeypatch.setattr(settings, "plugin_table", lambda path=tmp_path / "absent.json": real(path))
    monkeypatch.setattr(ops.from_launcher.layout, "DEFAULT", Layout(tmp_path / "root"))


def test_opsctls_venv_reads_the_installed_runtimes_table(monkeypatch, tmp_path):
    without_the_shipped_table(monkeypatch, tmp_path)
    libexec = tmp_path / "root" / "opt" / "optillm-proxy" / "current" / "libexec"
    libexec.mkdir(parents=True)
    (libexec / "plugins.json").write_text('{"plugins": {"only": {"module": "only_plugin", "profiles": ["lean"]}}}')
    assert list(ops.from_launcher.plugins.table()) == ["only"]


def test_no_table_anywhere_is_smokes_usage_error(monkeypatch, tmp_path):
    from ops.probes import smoke
    from ops.probes.client import UsageProblem

    without_the_shipped_table(monkeypatch, tmp_path)
    with pytest.raises(UsageProblem, match="cannot check plugin slugs: plugin table .* is missing"):
        smoke.plan(("jerry-xl",), False, "jerry-xl", (), None, 10)
