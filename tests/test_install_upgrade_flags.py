"""install.sh --upgrade / --rollback: argument handling (install.sh, and ops.install.options) and
profile choice (ops.install.steps), without root or systemd.

What they do on a real box (build, validate, switch, switch back) is tests/test_box_upgrade.py.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from ops.install.options import parse
from ops.install.run import Run
from ops.install.steps import choose_profile

INSTALL_SH = Path(__file__).resolve().parents[1] / "install.sh"


def run_install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True, timeout=60)


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


@pytest.mark.fast
def test_upgrade_lock_argument_is_optional_and_made_absolute():
    opts = parse(["--upgrade", "locks/full.txt"], environ={}, cwd="/srv/toolkit")
    assert (opts.upgrade, opts.upgrade_lock) == (True, "/srv/toolkit/locks/full.txt")
    opts = parse(["--upgrade", "--profile", "full"], environ={}, cwd="/srv/toolkit")
    assert (opts.upgrade, opts.upgrade_lock, opts.profile) == (True, "", "full")


@pytest.mark.fast
@pytest.mark.parametrize("argv, profile", [
    # a lock named after a profile names it
    (["--upgrade", "/somewhere/full.txt"], "full"),
    (["--upgrade", "/somewhere/lean.txt"], "lean"),
    # --profile wins over the lock's name
    (["--upgrade", "/somewhere/full.txt", "--profile", "lean"], "lean"),
])
def test_upgrade_profile_choice(argv, profile, tmp_path):
    opts = parse(argv, environ={})
    opts.root = str(tmp_path)  # an empty layout: no recorded profile to fall back on
    run = Run(opts, out=io.StringIO())
    choose_profile(run)
    assert run.profile == profile
