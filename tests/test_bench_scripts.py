"""The benchmark scripts under bench/ stay scripts (run by hand, figures quoted in README/RUNBOOK
with their date); here only their argument handling is checked, nothing is measured: --help
answers on stdout with exit 0, a bad argument is one line on stderr with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").iterdir() if p.suffix in (".sh", ".py"))


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    interpreter = "bash" if script.suffix == ".sh" else sys.executable
    return subprocess.run([interpreter, str(script), *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, stdin=subprocess.DEVNULL)


def test_every_bench_script_is_checked():
    assert {p.name for p in SCRIPTS} >= {"upgrade_downtime.sh", "profiles.sh", "request_path.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_answers_and_a_bad_argument_is_a_usage_error(script):
    shown = run(script, "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() and "Traceback" not in shown.stdout + shown.stderr
    bad = run(script, "--no-such-flag")
    assert bad.returncode == 2, (bad.returncode, bad.stdout, bad.stderr)
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    assert "--no-such-flag" in bad.stderr or "--venv" in bad.stderr, bad.stderr  # argparse may name a missing required flag first


@pytest.mark.parametrize("args, message", [
    (["0"], "ROUNDS must be a positive number, not '0' (see --help)"),
    (["three"], "ROUNDS must be a positive number, not 'three' (see --help)"),
    (["1", "2"], "one argument at most (ROUNDS), got 2 (see --help)"),
])
def test_upgrade_downtime_refuses_bad_rounds_before_touching_anything(args, message):
    proc = run(REPO / "bench" / "upgrade_downtime.sh", *args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"upgrade_downtime.sh: {message}"]
