"""install.sh --upgrade / --rollback: argument handling and profile choice, without root or systemd.

What they do on a real box (build, validate, switch, switch back) is tests/test_box_upgrade.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

INSTALL_SH = Path(__file__).resolve().parents[1] / "install.sh"


def run_install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True, timeout=60)


def sourced(script: str) -> str:
    """Run `script` with install.sh's functions defined (sourcing runs nothing)."""
    proc = subprocess.run(["bash", "-c", f"set -euo pipefail; source {INSTALL_SH}; {script}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("args, message", [
    (("--upgrade", "--rollback"), "--upgrade and --rollback are two separate runs"),
    (("--upgrade", "x.txt", "--root", "/tmp/stage"), "do not combine with --root"),
    (("--rollback", "--dry-run"), "do not combine with --root, --dry-run"),
    (("--upgrade", "--uninstall"), "do not combine with"),
    (("--root", "/tmp/a stage"), "stage under a path of letters, digits and ._/+- only"),
    (("--root", '/tmp/a"stage'), "stage under a path of letters, digits and ._/+- only"),
    (("--root", "/tmp/" + "x" * 160), "at most 160 characters long"),
])
def test_bad_combinations_are_usage_errors(args, message):
    proc = run_install(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_documents_the_flags_and_their_exit_codes():
    out = run_install("--help").stdout
    assert "--upgrade [LOCK]" in out and "--rollback" in out
    assert "1  refused at validation" in out and "3  failed after the switch" in out


def test_upgrade_lock_argument_is_optional_and_made_absolute():
    got = sourced('parse_args --upgrade locks/full.txt; echo "${UPGRADE}|${UPGRADE_LOCK}"')
    assert got == f"1|{Path.cwd()}/locks/full.txt"
    assert sourced('parse_args --upgrade --profile full; echo "${UPGRADE}|${UPGRADE_LOCK}|${PROFILE}"') == "1||full"


@pytest.mark.parametrize("script, profile", [
    # a lock named after a profile names it
    ('UPGRADE=1; UPGRADE_LOCK=/somewhere/full.txt; choose_profile', "full"),
    ('UPGRADE=1; UPGRADE_LOCK=/somewhere/lean.txt; choose_profile', "lean"),
    # --profile wins over the lock's name
    ('UPGRADE=1; UPGRADE_LOCK=/somewhere/full.txt; PROFILE=lean; PROFILE_GIVEN=1; choose_profile', "lean"),
])
def test_upgrade_profile_choice(script, profile):
    assert sourced(f'{script}; echo "${{PROFILE}}"') == profile
