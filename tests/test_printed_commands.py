"""Every command the README, the RUNBOOK and install.sh's summary print is proven somewhere
(tests/printed_commands.py says where); this fast tier checks the bookkeeping, the box test runs them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.printed_commands import PROOFS, REPO, doc_commands, source_of, summary_commands
from tests.test_docs import _install_summary

PRINTED = doc_commands()
SUMMARY = summary_commands(_install_summary())


def test_the_summary_prints_the_operators_next_commands():
    assert {"sudo opsctl health", "sudo opsctl smoke --all", "sudo opsctl lint", "sudo ./install.sh"} <= set(SUMMARY), SUMMARY


@pytest.mark.parametrize("command", sorted(set(PRINTED) | set(SUMMARY)))
def test_every_printed_command_is_proven_somewhere(command):
    where = PRINTED.get(command, []) + (["install.sh's summary"] if command in SUMMARY else [])
    assert command in PROOFS, (f"{', '.join(where)} prints `{command}`, which no test runs: add it to PROOFS in "
                               "tests/printed_commands.py (run in the box as printed, or name the test that runs it)")


@pytest.mark.parametrize("command", sorted(PROOFS))
def test_every_proof_is_for_a_command_still_printed(command):
    assert command in PRINTED or command in SUMMARY, f"`{command}` is no longer printed: drop it from PROOFS"


@pytest.mark.parametrize("command", sorted(c for c, p in PROOFS.items() if p.how == "test"))
def test_a_named_test_runs_the_concrete_form(command):
    proof = PROOFS[command]
    assert proof.why, f"say why `{command}` is not run as printed"
    source = source_of(proof.test)
    assert proof.text in source, f"{proof.test} does not contain {proof.text!r}: it does not run `{command}`"


@pytest.mark.parametrize("command", sorted(c for c, p in PROOFS.items() if p.how == "ci"))
def test_developer_commands_are_what_ci_runs_and_select_tests(command):
    """`.ci/run` execs scripts/test.sh; the pytest arguments shown select at least one test."""
    assert "exec scripts/test.sh" in (REPO / ".ci/run").read_text()
    args = shlex.split(command)
    args = args[args.index("pytest") + 1:] if "pytest" in args else args[2:]
    if not args:
        return
    args = [a for a in args if a not in ("-s", "-q")]
    if "-n" in args:  # pytest-xdist's workers: the selection is the same without them
        del args[args.index("-n"):args.index("-n") + 2]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-qq", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True)
    # -q -q style lines: "tests/test_x.py: N"
    counts = [int(line.rsplit(":", 1)[1]) for line in proc.stdout.splitlines() if re.match(r"^\S+\.py: \d+$", line)]
    assert proc.returncode == 0 and sum(counts) > 0, f"`{command}` selects no test:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
