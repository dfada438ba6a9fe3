"""`opsctl report` over a million records: wall time and peak memory, and that memory does not grow.

Usage: uv run python bench/report_scale.py [--records N] [--small N] [--form journal|stderr] [--json]

Writes synthetic request records to temp files (deleted afterwards) and runs the real command,
`opsctl report --input FILE --json`, as a child process on each, one after the other:

  empty              a file with no record: the interpreter, click and the report module alone
  small (100k)       --small records
  large (1M)         --records records

Each record is one line as the real source gives it. --form journal (default): what
`journalctl -o json --output-fields=...` prints for the command, i.e. journalctl's own
__CURSOR, __REALTIME_TIMESTAMP, __MONOTONIC_TIMESTAMP and _BOOT_ID plus the record fields the
report asks for (~570 bytes a line). --form stderr: the launcher's `optillm-proxy-record {json}`
line with every field (~710 bytes), written by the launcher's own stderr_sender for a template
record. The traffic mix: base model 60%, moa 15%, bon 10%, plansearch/self_consistency 5% each,
policy refusals 4% (two rules), unauthenticated 1%; 2% of admitted answers are 502/504;
latencies log-normal around 40 ms (base) to a few seconds (strategies).

Figures per run: wall s (spawn to exit, the interpreter's start included), records/s, and peak
RSS of that child (os.wait4's ru_maxrss). Linux carries the forking process's high-water mark
into a child's ru_maxrss across exec, and this script grows while it generates a million
records, so opsctl is forked by a small helper (`python -I -S`, ~10 MiB, started afresh for each
run) that reports the child's ru_maxrss and wall time.

Reading them: the large run's wall time is the goal (<= 30 s for 1M records); its RSS against
the small run's (and the empty one's) is the memory claim: counters and a fixed histogram per
approach, so the three should be within a few MiB of each other while the record count grows
10x. The report's own counts are checked
against what was generated (requests per approach, refusals by rule): a disagreement exits 1.
Figures depend on a shared machine: quote them with their date, not as limits. Not a test.
Exit codes: 0 figures printed, 1 a run failed or miscounted, 2 usage.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "launcher")]

from optillm_proxy_launcher.layout import BASE_MODEL  # noqa: E402
from optillm_proxy_launcher.records import MARKER_FIELD, MARKER_VALUE, Record, stderr_sender  # noqa: E402
from ops.report import engine as report  # noqa: E402

WALL_GOAL_SECONDS = 30.0
# approach (or "-"), share, calls, median ms
MIX = (("none", 0.60, 1, 40), ("moa", 0.15, 3, 900), ("bon", 0.10, 4, 1100), ("plansearch", 0.05, 4, 2500),
       ("self_consistency", 0.05, 5, 1300), ("-:approach-not-allowed", 0.03, 0, 1), ("-:approach-tag", 0.01, 0, 1),
       ("-:", 0.01, 0, 1))
ERROR_SHARE = 0.02


class StepFailed(Exception):
    pass


def _stderr_template() -> str:
    """The launcher's own line for a record whose varying fields are placeholders."""
    out = io.StringIO()
    stderr_sender(out)(Record(
        request_id="%(id)s", method="POST", path="/v1/chat/completions", model="%(model)s", approach="%(approach)s",
        base_model=BASE_MODEL, status=999, duration_ms=888, upstream_calls=777, upstream_prompt_tokens=666,
        upstream_completion_tokens=555, upstream_errors=0, upstream_retries=0, deadline_hit=0, upstream_timeout=0,
        policy_rule="%(rule)s", error_code="%(rule)s"))
    line = out.getvalue()
    for number, name in (("999", "status"), ("888", "ms"), ("777", "calls"), ("666", "prompt"), ("555", "completion")):
        line = line.replace(f'"{number}"', f'"%({name})d"', 1)
    return line


def _journal_template() -> str:
    fields = {"__CURSOR": "s=6d1c2b8e4f0a4e0c9d0f5b3a2e1c7d9f;i=%(seq)x;b=0a1b2c3d4e5f60718293a4b5c6d7e8f9;"
                          "m=%(mono)x;t=%(us)x;x=3c9f2a1b0e8d7c6b",
              "__REALTIME_TIMESTAMP": "%(us)d", "__MONOTONIC_TIMESTAMP": "%(mono)d",
              "_BOOT_ID": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", MARKER_FIELD: MARKER_VALUE,
              report.F_APPROACH: "%(approach)s", report.F_STATUS: "%(status)d", report.F_DURATION: "%(ms)d",
              report.F_CALLS: "%(calls)d", report.F_PROMPT: "%(prompt)d", report.F_COMPLETION: "%(completion)d",
              report.F_RULE: "%(rule)s"}
    assert set(fields) >= set(report.NEEDED_FIELDS)
    return json.dumps(fields) + "\n"


def generate(path: Path, n: int, form: str, seed: int = 7) -> Counter:
    """Write n records; return what the report must count (requests per approach, refusals by rule)."""
    rng = random.Random(seed)
    template = _journal_template() if form == "journal" else _stderr_template()
    kinds = [kind for kind, *_ in MIX]
    weights = [share for _, share, *_ in MIX]
    spec = {kind: (calls, median) for kind, _, calls, median in MIX}
    expected: Counter = Counter()
    us0 = 1_748_736_000_000_000  # 2025-06-01
    picks = rng.choices(kinds, weights, k=n)
    with open(path, "w", buffering=1 << 20) as out:
        for i, kind in enumerate(picks):
            calls, median = spec[kind]
            approach, _, rule = kind.partition(":") if kind.startswith("-") else (kind, "", "")
            expected[kind] += 1
            if approach == "-":
                status = 400 if rule else 401
            else:
                status = rng.choice((502, 504)) if rng.random() < ERROR_SHARE else 200
            ms = int(rng.lognormvariate(0, 0.6) * median)
            out.write(template % {
                "seq": i, "mono": 5_000_000 + i * 1000, "us": us0 + i * 1000, "id": f"{i:016x}",
                "model": BASE_MODEL if approach in ("none", "-") else f"{approach}-{BASE_MODEL}", "approach": approach,
                "status": status, "ms": ms, "calls": calls, "prompt": 10 * calls,
                "completion": 7 * calls + (i % 5), "rule": rule})
    return expected


def opsctl() -> list[str]:
    here = Path(sys.executable).parent / "opsctl"
    found = str(here) if here.exists() else shutil.which("opsctl")
    if not found:
        raise StepFailed("opsctl not found: run with `uv run python bench/report_scale.py` from the repo")
    return [found]


# Forks opsctl from a fresh small process, so the child's ru_maxrss is its own (see the docstring).
MEASURE = """
import os, sys, time
started = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.monotonic() - started} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_report(path: Path) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS bytes of the child, its JSON output)."""
    with tempfile.TemporaryDirectory(prefix="report-run-") as tmp:
        figures = Path(tmp) / "figures"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            subprocess.run([sys.executable, "-I", "-S", "-c", MEASURE, str(figures), *opsctl(), "report",
                            "--input", str(path), "--json"], stdout=out, stderr=err, check=False)
            wall, maxrss_kib, code = figures.read_text().split()
            out.seek(0)
            err.seek(0)
            if int(code) != 0:
                raise StepFailed(f"opsctl report exited {code}: {err.read().decode(errors='replace')[-2000:]}")
            return float(wall), int(maxrss_kib) * 1024, json.loads(out.read())


def check_counts(data: dict, expected: Counter, n: int) -> None:
    got = {a["approach"]: a["requests"] for a in data["approaches"]}
    want = {kind: count for kind, count in expected.items() if not kind.startswith("-")}
    rules = {kind.split(":", 1)[1]: count for kind, count in expected.items() if kind.startswith("-:") and kind != "-:"}
    problems = []
    if data["records"] != n or data["malformed"] != 0:
        problems.append(f"records {data['records']} malformed {data['malformed']}, generated {n}")
    if got != want:
        problems.append(f"requests per approach {got}, generated {want}")
    if data["refused"]["rules"] != rules or data["refused"]["no_approach"] != expected["-:"]:
        problems.append(f"refused {data['refused']}, generated {rules} and {expected['-:']} without a rule")
    if problems:
        raise StepFailed("the report miscounted: " + "; ".join(problems))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the large run")
    parser.add_argument("--small", type=int, default=100_000, help="records in the small run")
    parser.add_argument("--form", choices=("journal", "stderr"), default="journal",
                        help="journalctl -o json lines, or the launcher's stderr lines")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if not 0 < args.small <= args.records:
        parser.error("need 0 < --small <= --records")
    return args


def main() -> int:
    args = parse_args()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
            for label, n in (("empty", 0), ("small", args.small), ("large", args.records)):
                path = Path(tmp) / f"{label}.jsonl"
                started = time.monotonic()
                expected = generate(path, n, args.form)
                generated = time.monotonic() - started
                wall, rss, data = run_report(path)
                check_counts(data, expected, n)
                rows.append({"run": label, "records": n, "file_mb": round(path.stat().st_size / 1e6, 1),
                             "generate_s": round(generated, 1), "wall_s": round(wall, 2),
                             "records_per_s": round(n / wall) if n else 0, "peak_rss_mib": round(rss / 2**20, 1),
                             "table": data["approaches"]})
                path.unlink()
    except StepFailed as exc:
        print(f"report_scale: {exc}", file=sys.stderr)
        return 1
    large, small, empty = rows[2], rows[1], rows[0]
    verdict = {"wall_goal_s": WALL_GOAL_SECONDS, "wall_ok": large["wall_s"] <= WALL_GOAL_SECONDS,
               "rss_growth_small_to_large_mib": round(large["peak_rss_mib"] - small["peak_rss_mib"], 1),
               "rss_growth_empty_to_large_mib": round(large["peak_rss_mib"] - empty["peak_rss_mib"], 1)}
    if args.json:
        print(json.dumps({"form": args.form, "runs": [{k: v for k, v in r.items() if k != "table"} for r in rows],
                          **verdict}, indent=2))
        return 0
    print(f"opsctl report --input, {args.form} form, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'run':6} {'records':>9} {'file MB':>8} {'wall s':>7} {'records/s':>10} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['run']:6} {r['records']:>9} {r['file_mb']:>8} {r['wall_s']:>7} {r['records_per_s']:>10} "
              f"{r['peak_rss_mib']:>13}")
    print(f"large run {large['wall_s']} s against the goal of {WALL_GOAL_SECONDS:g} s: "
          f"{'met' if verdict['wall_ok'] else 'MISSED'}; peak RSS {small['records']} -> {large['records']} records: "
          f"{verdict['rss_growth_small_to_large_mib']:+} MiB (empty file -> large: "
          f"{verdict['rss_growth_empty_to_large_mib']:+} MiB)")
    print("counts checked against the generated records: equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
