"""ops/runtime/keys.py's migration of an earlier install's OPENAI_API_KEY= line into the upstream key file,
case by case (install.sh runs it; tests/test_install.py proves it through a staged install)."""

from __future__ import annotations

import stat

import pytest

from ops.runtime.keys import migrate_upstream_key
from optillm_proxy_launcher.settings import UPSTREAM_KEY_PLACEHOLDER

SHOWN = "/etc/optillm-proxy/upstream-key"
NOTE = f"# OPENAI_API_KEY: moved to {SHOWN} by install.sh (a credential, not a variable)\n"


@pytest.fixture
def files(tmp_path):
    env, key = tmp_path / "env", tmp_path / "upstream-key"
    return env, key


def migrate(files, env_text: str, key_text: str | None) -> str:
    env, key = files
    env.write_text(env_text)
    if key_text is not None:
        key.write_text(key_text)
    return migrate_upstream_key(env, key, SHOWN)


def test_no_key_line_changes_nothing(files):
    assert migrate(files, "PROXY_PLUGINS=none\n", None) == ""
    assert files[0].read_text() == "PROXY_PLUGINS=none\n" and not files[1].exists()


def test_the_value_moves_into_an_absent_key_file_and_every_line_becomes_a_comment(files):
    out = migrate(files, "OPENAI_API_KEY=old\nPROXY_PLUGINS=none\n  OPENAI_API_KEY='the-key'\n", None)
    assert out == "moved"
    assert files[1].read_text() == "the-key\n"  # the last assignment, as systemd reads it
    assert stat.S_IMODE(files[1].stat().st_mode) == 0o600
    assert files[0].read_text() == f"{NOTE}PROXY_PLUGINS=none\n{NOTE}"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_an_empty_key_file_is_filled(files):
    assert migrate(files, "OPENAI_API_KEY=\"the-key\"\n", "") == "moved"
    assert files[1].read_text() == "the-key\n"


@pytest.mark.parametrize("value", ["", UPSTREAM_KEY_PLACEHOLDER, "the-key"])
def test_lines_the_key_file_makes_redundant_are_dropped(files, value):
    assert migrate(files, f"OPENAI_API_KEY={value}\n", "the-key\n") == "dropped"
    assert files[1].read_text() == "the-key\n" and files[0].read_text() == NOTE


def test_the_placeholder_never_becomes_the_key(files):
    assert migrate(files, f"OPENAI_API_KEY={UPSTREAM_KEY_PLACEHOLDER}\n", None) == "dropped"
    assert not files[1].exists()


def test_two_different_keys_are_left_for_the_operator(files):
    assert migrate(files, "OPENAI_API_KEY=another\n", "the-key\n") == "conflict"
    assert files[0].read_text() == "OPENAI_API_KEY=another\n" and files[1].read_text() == "the-key\n"
