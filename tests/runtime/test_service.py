"""ops/runtime/service.py: reload or restart, decided in one place; systemd faked (the box test
tests/test_box_reload.py reloads for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ops.from_launcher.layout import Layout
from ops.runtime import install_state, service

COMPONENTS = ["runtime", "launcher", "unit", "socket", "drop-ins", "env-file", "key-file", "upstream-key",
              "provider-file", "first-install"]


class FakeSystem:
    def __init__(self, active=True, can_reload="yes", reload_code=0, journal=""):
        self.active, self.can_reload, self.reload_code, self.journal_text = active, can_reload, reload_code, journal
        self.calls: list[str] = []

    def unit_active(self, name):
        return self.active

    def run(self, argv, timeout):
        self.calls.append(" ".join(argv))
        if argv[:2] == ["systemctl", "show"]:
            return 0, self.can_reload + "\n"
        if argv[:2] == ["systemctl", "reload"]:
            return self.reload_code, "" if self.reload_code == 0 else "Job for optillm-proxy.service failed."
        raise AssertionError(argv)

    def restart_service(self):
        self.calls.append("restart")
        return 0, ""

    def journal(self, unit, since=None):
        return self.journal_text


@settings(max_examples=60, deadline=None)
@given(reasons=st.lists(st.sampled_from(COMPONENTS), max_size=4, unique=True), active=st.booleans(),
       can_reload=st.booleans())
def test_a_reload_only_when_every_reason_is_reloadable_and_the_unit_runs_and_can(reasons, active, can_reload):
    action = service.decide(reasons, active, can_reload)
    expected = active and can_reload and reasons and set(reasons) <= set(service.RELOADABLE)
    assert action == ("reload" if expected else "restart")


def test_what_a_launcher_reads_at_start_is_reloadable_and_nothing_else():
    assert set(service.RELOADABLE) == {"env-file", "key-file", "upstream-key", "provider-file"}
    assert set(service.RELOADABLE) < set(install_state.fingerprint(Layout(Path("/nonexistent"))))


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(install_state, "record_restart", lambda layout: calls.append(layout))
    return calls


@pytest.fixture
def layout(tmp_path):
    return Layout(tmp_path)


def test_an_env_change_on_a_running_service_is_a_reload_and_recorded(layout, recorded):
    system = FakeSystem()
    applied = service.apply_change(layout, ["env-file", "upstream-key"], system)
    assert applied == service.Applied("reloaded", 0, "")
    assert "systemctl reload optillm-proxy" in system.calls and "restart" not in system.calls
    assert recorded == [layout]


@pytest.mark.parametrize("reasons, system", [
    (["env-file", "launcher"], FakeSystem()),
    (["env-file"], FakeSystem(active=False)),
    (["env-file"], FakeSystem(can_reload="no")),
    ([], FakeSystem()),
])
def test_anything_else_is_a_restart(layout, reasons, system):
    assert service.apply_change(layout, reasons, system).action == "restarted"
    assert system.calls[-1] == "restart" and not any("reload" in c for c in system.calls)


def test_a_refused_reload_is_reported_and_nothing_restarted(layout, recorded):
    why = "refused, the running process serves on unchanged: PROXY_PLUGINS names unknown plugin 'x'"
    system = FakeSystem(reload_code=1, journal=f"optillm-proxy-reload: started\noptillm-proxy-reload: {why}\n")
    applied = service.apply_change(layout, ["env-file"], system)
    assert applied == service.Applied("reloaded", 1, why)
    assert "restart" not in system.calls and recorded == []


def test_a_reload_refused_for_memory_becomes_a_restart(layout):
    why = ("refused, the running process serves on unchanged: the service uses 1200 MiB ...: apply it with "
           "systemctl restart optillm-proxy (it drains first, then starts one process)")
    system = FakeSystem(reload_code=1, journal=f"optillm-proxy-reload: {why}\n")
    applied = service.apply_change(layout, ["key-file"], system)
    assert applied.action == "restarted" and applied.code == 0 and "restarted instead" in applied.detail
    assert system.calls[-1] == "restart"
