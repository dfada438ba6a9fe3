"""The benchmark scripts under bench/ stay scripts (run by hand, figures quoted in bench/README.md
with their date). Here their argument handling is checked (--help answers on stdout with exit 0,
a bad argument is one line on stderr with exit 2), and each one that needs no box runs end to end
with its smallest settings, so a change elsewhere (the launcher's checks, a fixture, a layout
value) cannot leave it broken unnoticed: exit 0 and the lines it promises. Nothing is measured
against a number. upgrade_downtime.sh needs an installed host: it runs in the session's box, in
tests/test_box_upgrade.py (which puts the box back). box_restart.sh and health_vs_curl.sh --box
are not run: each boots a box of its own on the fixed ports 4000/4020, which the session's box
fixtures hold from the first box test to the end of the session."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").iterdir() if p.suffix in (".sh", ".py"))
# A bound on each end-to-end run, far above its usual time (the machine may be shared).
RUN_TIMEOUT = 600
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run(script: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    interpreter = "bash" if script.suffix == ".sh" else sys.executable
    return subprocess.run([interpreter, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, stdin=subprocess.DEVNULL)


def run_to_the_end(script: str, *args: str) -> list[str]:
    """The script's stdout lines after a run that exited 0 (else its output, for the reader)."""
    proc = run(REPO / "bench" / script, *args, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def assert_prints(lines: list[str], *patterns: str) -> None:
    """Each pattern matches a whole line, in this order (other lines may come between)."""
    rest = iter(lines)
    for pattern in patterns:
        assert any(re.fullmatch(pattern, line) for line in rest), (pattern, lines)


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


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.suffix == ".sh"], ids=lambda p: p.name)
def test_help_of_a_bash_script_is_its_whole_header(script):
    """--help prints the comment block under the shebang, no line cut off and none of the code."""
    header = []
    for line in script.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(re.sub(r"^# ?", "", line))
    assert run(script, "--help").stdout.splitlines() == header


@pytest.mark.parametrize("args, message", [
    (["0"], "ROUNDS must be a positive number, not '0' (see --help)"),
    (["three"], "ROUNDS must be a positive number, not 'three' (see --help)"),
    (["1", "2"], "one argument at most (ROUNDS), got 2 (see --help)"),
])
def test_upgrade_downtime_refuses_bad_rounds_before_touching_anything(args, message):
    proc = run(REPO / "bench" / "upgrade_downtime.sh", *args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"upgrade_downtime.sh: {message}"]


# --- end to end, smallest settings ------------------------------------------------------------

@pytest.mark.parametrize("form", ["journal", "stderr"])
def test_report_scale_runs(form):
    lines = run_to_the_end("report_scale.py", "--records", "10", "--small", "1", "--form", form)
    row = rf" +[0-9]+ +{NUMBER} +{NUMBER} +[0-9]+ +{NUMBER}"
    assert_prints(lines,
                  rf"opsctl report --input, {form} form, [0-9]+ cores, load {NUMBER}",
                  r"run +records +file MB +wall s +records/s +peak RSS MiB",
                  rf"empty{row}", rf"small{row}", rf"large{row}",
                  rf"large run {NUMBER} s against the goal of 30 s: (met|missed); peak RSS .*",
                  r"counts checked against the generated records: equal")


def test_health_vs_curl_runs():
    lines = run_to_the_end("health_vs_curl.sh", "-n", "1")
    assert_prints(lines,
                  r"endpoint http://127\.0\.0\.1:[0-9]+/health on .*, median of 1 runs each .*",
                  rf"curl -sf +{NUMBER} ms",
                  rf"opsctl health +{NUMBER} ms",
                  rf"ratio opsctl/curl: {NUMBER}x")


def test_request_path_runs(lean_runtime):
    lines = run_to_the_end("request_path.py", "--venv", str(lean_runtime), "--requests", "1",
                           "--load-requests", "1", "--burst", "1", "--cap", "60")
    pair = rf"\| {NUMBER} \| {NUMBER} \| .*\|"
    assert_prints(lines,
                  rf"optillm 0\.3\.12 from {re.escape(str(lean_runtime))}, .*",
                  r"\| metric \| stock \| launcher \| ratio \(launcher/stock\) \|",
                  rf"\| CPU per pass-through request, ms .*{pair}",
                  rf"\| throughput, 16 clients, upstream 50 ms, req/s.*{pair}",
                  rf"\| throughput, 64 clients, upstream 50 ms, req/s.*{pair}",
                  rf"\| peak RSS \(VmHWM\) after 1 concurrent moa-jerry-xl, .*{pair}",
                  r"\| upstream calls per moa/bon/plansearch/self_consistency \(want 3/4/4/5\) \| 3/4/4/5 \| 3/4/4/5 \| same \|",
                  r"\| errors \(non-200 or transport errors, all phases\) \| 0 \| 0 \| - \|",
                  r"- launcher CPU per request .*",
                  r"- per-request record .*",
                  r"- launcher peak RSS .*",
                  r"- fan-out 3/4/4/5 on both: met")


@pytest.mark.real
def test_profiles_runs_the_lean_profile():
    """Cold (empty uv cache: downloads the lean lock) and warm install, then the launcher's start."""
    lines = run_to_the_end("profiles.sh", "lean")
    assert_prints(lines,
                  r"# bench/profiles\.sh [0-9T:-]+Z, uv [0-9.]+ .*, [0-9]+ cores",
                  r"profile +packages +venv +cold_s +warm_s +healthy_s +rss_mb +plugins",
                  rf"lean +[0-9]+ +{NUMBER}[KMG] +{NUMBER} +{NUMBER} +{NUMBER} +[0-9]+ +none")


@pytest.mark.real
def test_install_bench_runs_the_lean_profile():
    lines = run_to_the_end("install.sh", "--profile", "lean", "--plugins", "none", "--runs", "1")
    assert_prints(lines,
                  r"bench/install\.sh: profile=lean plugins=none runs=1 .*",
                  rf"  fresh install \(install\.sh --root, bytecode compiled\): +{NUMBER} s",
                  rf"  idempotent re-run: +{NUMBER} s",
                  rf"  venv size: {NUMBER}[KMG]",
                  rf"  start to healthy, precompiled bytecode: +{NUMBER} s \(median {NUMBER}\)",
                  rf"  start to healthy, no bytecode: +{NUMBER} s \(median {NUMBER}\)")


def test_litellm_start_runs(litellm_venv):
    lines = run_to_the_end("litellm_start.py", "-n", "1")
    assert_prints(lines,
                  r"litellm [0-9.]+: [0-9]+ packages in litellm\.txt",
                  rf"venv {re.escape(str(litellm_venv))}: [0-9]+ MiB on disk \(build or reuse: {NUMBER} s\)",
                  rf"start to ready over 1 runs: min {NUMBER} s, median {NUMBER} s, max {NUMBER} s",
                  r"resident memory when ready: median [0-9]+ MiB")
