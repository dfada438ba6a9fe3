"""`opsctl report`: per-approach figures from the launcher's request records.

Fast tests feed synthetic records written by the launcher's own code (records.Record through
stderr_sender / journal_fields), run the CLI on files, stdin and a stand-in journalctl on PATH.
One real test starts the launcher from the lean runtime against the recording upstream and reads
its log: calls and tokens per request must be what the upstream saw.
"""

from __future__ import annotations

import io
import json
import math
import random
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ops.report import engine as report
from ops.cli import cli
from optillm_proxy_launcher.records import FIELD_NAMES, MARKER_FIELD, MARKER_VALUE, Record, stderr_sender


def record(approach: str = "none", *, status: int = 200, ms: int = 10, calls: int = 1, prompt: int = 10,
           completion: int = 7, rule: str = "", request_id: str = "r1") -> Record:
    return Record(request_id=request_id, method="POST", path="/v1/chat/completions",
                  model=f"{approach}-jerry-xl", approach=approach, base_model="jerry-xl", status=status,
                  duration_ms=ms, upstream_calls=calls, upstream_prompt_tokens=prompt,
                  upstream_completion_tokens=completion, upstream_errors=0, upstream_retries=0,
                  deadline_hit=0, upstream_timeout=0, policy_rule=rule, error_code=rule)


def stderr_line(rec: Record) -> str:
    """The line the launcher prints outside systemd, by the launcher's own sender."""
    out = io.StringIO()
    stderr_sender(out)(rec)
    return out.getvalue()


def journal_line(rec: Record, realtime_us: int | None = None) -> str:
    """A `journalctl -o json` line: every field a string, plus journalctl's own fields."""
    entry = {MARKER_FIELD: MARKER_VALUE, **rec.journal_fields(), "MESSAGE": rec.message(), "_PID": "42",
             "__CURSOR": "s=abc;i=1", "_SYSTEMD_UNIT": "optillm-proxy.service"}
    if realtime_us is not None:
        entry["__REALTIME_TIMESTAMP"] = str(realtime_us)
    return json.dumps(entry) + "\n"


def aggregate(lines) -> report.Report:
    agg = report.Aggregate()
    agg.feed(line.encode() if isinstance(line, str) else line for line in lines)
    return report.build(agg, {"source": "file", "input": "x"})


def rows(rep: report.Report) -> dict[str, report.Row]:
    return {r.approach: r for r in rep.rows}


def run(*args: str, input: str | bytes | None = None, env: dict | None = None):
    return CliRunner().invoke(cli, ["report", *args], input=input, env=env, catch_exceptions=False)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- aggregation --------------------------------------------------------------------------------


def nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_are_within_the_stated_resolution(seed):
    rng = random.Random(seed)
    durations = [max(0, int(rng.lognormvariate(7, 1.5))) for _ in range(2000)]  # ~1 ms .. minutes
    row = rows(aggregate(stderr_line(record("moa", ms=ms)) for ms in durations))["moa"]
    for q, got in ((0.5, row.latency_p50_s), (0.95, row.latency_p95_s)):
        exact = nearest_rank(durations, q) / 1000
        # the stated 1%, plus the output's rounding to whole ms
        assert abs(got - exact) <= exact * report.RESOLUTION_PCT / 100 + 0.0005, (q, got, exact)


def test_equal_and_tiny_durations_are_exact():
    rep = aggregate([stderr_line(record("bon", ms=40))] * 3 + [stderr_line(record("none", ms=0))] * 2)
    assert (rows(rep)["bon"].latency_p50_s, rows(rep)["bon"].latency_p95_s) == (0.04, 0.04)
    assert rows(rep)["none"].latency_p95_s == 0.0


def test_per_request_figures_and_the_base_multiplier():
    lines = [stderr_line(record("none", calls=1, prompt=10, completion=7))] * 4  # 17 tokens/request
    lines += [stderr_line(record("moa", calls=3, prompt=30, completion=21)),  # 51
              stderr_line(record("moa", calls=3, prompt=30, completion=35))]  # 65
    rep = aggregate(lines)
    base, moa = rows(rep)["none"], rows(rep)["moa"]
    assert (base.requests, base.upstream_calls_per_request, base.upstream_tokens_per_request) == (4, 1.0, 17.0)
    assert base.tokens_vs_base == 1.0
    assert (moa.requests, moa.upstream_calls_per_request, moa.upstream_tokens_per_request) == (2, 3.0, 58.0)
    assert moa.tokens_vs_base == round(58 / 17, 3)
    assert [r.approach for r in rep.rows] == ["none", "moa"]  # base first


def test_multiplier_is_na_without_base_model_traffic():
    rep = aggregate([stderr_line(record("moa", calls=3, prompt=30, completion=21))])
    assert rows(rep)["moa"].tokens_vs_base is None
    assert rows(rep)["moa"].approach in report.render_text(rep) and " n/a" in report.render_text(rep)


def test_error_pct_counts_failed_answers_and_refusals_apart():
    lines = [stderr_line(record("moa", status=s)) for s in (200, 200, 502, 504)]
    lines += [stderr_line(record("-", status=400, calls=0, prompt=0, completion=0, rule="approach-not-allowed"))] * 3
    lines += [stderr_line(record("-", status=400, calls=0, prompt=0, completion=0, rule="approach-tag"))]
    lines += [stderr_line(record("-", status=401, calls=0, prompt=0, completion=0))] * 2
    rep = aggregate(lines)
    assert list(rows(rep)) == ["moa"]
    assert (rows(rep)["moa"].errors, rows(rep)["moa"].error_pct) == (2, 50.0)
    assert rep.rules == {"approach-not-allowed": 3, "approach-tag": 1} and rep.refused == 4
    assert rep.other_statuses == {"401": 2} and rep.records == 10
    text = report.render_text(rep)
    assert "refused by policy: 4 (approach-not-allowed 3, approach-tag 1)" in text
    assert "no approach (not a chat completion, unauthenticated): 2 (status 401 2)" in text


def test_malformed_record_lines_are_skipped_and_counted_other_lines_ignored():
    good = stderr_line(record("none"))
    missing = json.loads(good.split(" ", 1)[1])
    del missing[report.F_STATUS]
    lines = [
        good,
        "optillm-proxy-record {not json\n",
        "optillm-proxy-record " + json.dumps(missing) + "\n",
        stderr_line(record("none")).replace('"10"', '"ten"'),  # a count that is no number
        "optillm-proxy-record [1, 2]\n",
        '{"OPTILLM_PROXY_RECORD": "request", "OPTILLM_PROXY_APPROACH": ["a", "b"], "OPTILLM_PROXY_STATUS": "200"}\n',
        "{truncated\n",
        " * Running on http://127.0.0.1:4020\n",  # the server's other log lines
        json.dumps({"MESSAGE": "Started optillm-proxy.service", "__CURSOR": "x"}) + "\n",  # other journal entries
        "\n",
        b"\xff\xfe binary junk\n",
    ]
    agg = report.Aggregate()
    agg.feed(line.encode() if isinstance(line, str) else line for line in lines)
    assert (agg.records, agg.malformed, agg.ignored) == (1, 6, 4)
    rep = report.build(agg, {"source": "file", "input": "x"})
    assert "skipped 6 malformed record line(s)" in report.render_text(rep)


def test_journal_export_lines_and_stderr_lines_read_the_same():
    recs = [record("none", ms=12), record("moa", ms=40, calls=3, prompt=30, completion=21),
            record("-", status=400, rule="approach-not-allowed", calls=0, prompt=0, completion=0)]
    from_stderr = aggregate(stderr_line(r) for r in recs)
    from_journal = aggregate(journal_line(r, 1_717_236_000_000_000 + i) for i, r in enumerate(recs))
    assert from_stderr.rows == from_journal.rows and from_stderr.rules == from_journal.rules
    assert from_journal.window["first_record"] and from_journal.window["last_record"]
    assert from_stderr.window["first_record"] is None  # stderr lines carry no time


def test_the_fields_read_are_the_launchers_fields():
    assert set(report.NEEDED_FIELDS) - {MARKER_FIELD} <= set(FIELD_NAMES)
    argv = report.journal_argv("optillm-proxy", "yesterday", "-1h")
    assert argv[:6] == ["journalctl", "-u", "optillm-proxy", "-o", "json", "--no-pager"]
    assert f"{MARKER_FIELD}={MARKER_VALUE}" in argv and "--since=yesterday" in argv and "--until=-1h" in argv
    fields = next(a for a in argv if a.startswith("--output-fields=")).split("=", 1)[1].split(",")
    assert set(fields) == set(report.NEEDED_FIELDS)


def test_memory_is_bounded_by_buckets_and_keys_not_records():
    agg = report.Aggregate()
    day = range(0, 86_400_000, 997)  # a day in ms, 86k records
    template = stderr_line(record("moa", ms=123456789))
    agg.feed(template.replace('"123456789"', f'"{ms}"').encode() for ms in day)
    agg.feed(stderr_line(record(f"app{i}")).encode() for i in range(report.MAX_KEYS + 50))
    agg.feed(stderr_line(record("-", status=400, rule=f"rule{i}")).encode() for i in range(report.MAX_KEYS + 50))
    hist = agg.approaches["moa"][report.HIST]
    assert len(hist) < math.log(86_400_000) / math.log(report.GROWTH) + 2  # ~920 buckets for a day
    assert len(agg.approaches) == report.MAX_KEYS + 1 and report.OVERFLOW in agg.approaches
    assert len(agg.rules) == report.MAX_KEYS + 1
    assert agg.records == len(day) + 2 * (report.MAX_KEYS + 50)


# --- the command --------------------------------------------------------------------------------


def test_empty_input_says_so_and_exits_0(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    result = run("--input", str(empty))
    assert result.exit_code == 0
    assert one_line(result.stdout) == f"no request records in the file {empty}"
    data = json.loads(run("--input", str(empty), "--json").stdout)
    assert data["records"] == 0 and data["approaches"] == [] and "no request records" in data["message"]


def test_table_and_json_from_a_file(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("".join([" * Serving Flask app\n", stderr_line(record("none", ms=12)),
                            stderr_line(record("moa", ms=40, calls=3, prompt=30, completion=21)),
                            stderr_line(record("-", status=400, rule="approach-not-allowed", calls=0,
                                               prompt=0, completion=0))]))
    result = run("--input", str(log))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"3 request record(s) from the file {log}"
    assert lines[1].split() == list(report.COLUMNS)
    assert lines[2].split() == ["none", "1", "0.0", "0.012", "0.012", "1.00", "17.0", "1.00"]
    assert lines[3].split() == ["moa", "1", "0.0", "0.040", "0.040", "3.00", "51.0", "3.00"]
    assert lines[4] == "refused by policy: 1 (approach-not-allowed 1)"
    assert "within 1%" in lines[-1]

    data = json.loads(run("--input", str(log), "--json").stdout)
    assert set(data) >= {"window", "approaches", "refused", "records"}
    assert data["records"] == 3 and data["window"]["source"] == "file"
    assert [set(a) for a in data["approaches"]] == [{
        "approach", "requests", "errors", "error_pct", "latency_p50_s", "latency_p95_s",
        "upstream_calls_per_request", "upstream_tokens_per_request", "tokens_vs_base"}] * 2
    assert data["approaches"][1] == {
        "approach": "moa", "requests": 1, "errors": 0, "error_pct": 0.0, "latency_p50_s": 0.04,
        "latency_p95_s": 0.04, "upstream_calls_per_request": 3.0, "upstream_tokens_per_request": 51.0,
        "tokens_vs_base": 3.0}
    assert data["refused"]["requests"] == 1 and data["refused"]["rules"] == {"approach-not-allowed": 1}


def test_stdin_is_dash():
    result = run("--input", "-", input=journal_line(record("none")) + journal_line(record("bon", calls=4)))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 request record(s) from the stdin")


def test_unreadable_input_exits_2_one_line(tmp_path):
    result = run("--input", str(tmp_path / "nope.log"))
    assert result.exit_code == 2
    assert one_line(result.output) == f"opsctl report: cannot read --input {tmp_path / 'nope.log'}: No such file or directory"


@pytest.mark.parametrize("args, needle", [
    (["--input", "x.log", "--since", "yesterday"], "with --input, select when exporting"),
    (["--input", "x.log", "--unit", "other"], "with --input, select when exporting"),
    (["--frobnicate"], "No such option"),
    (["--since"], "requires an argument"),
])
def test_usage_errors_exit_3_one_line(args, needle):
    result = run(*args)
    assert result.exit_code == 3, result.output
    line = one_line(result.output)
    assert line.startswith("opsctl report: ") and needle in line, line


# --- the journal, through a stand-in journalctl on PATH -------------------------------------------


def fake_journalctl(tmp_path: Path, stdout: str = "", stderr: str = "", code: int = 0) -> tuple[dict, Path]:
    """A `journalctl` that records its argv and prints what it is told; PATH for CliRunner's env."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "out").write_text(stdout)
    (tmp_path / "err").write_text(stderr)
    script = bindir / "journalctl"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\ncat {tmp_path}/out\n'
                      f'cat {tmp_path}/err >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}, tmp_path / "argv"


def test_reads_the_journal_through_journalctl_with_the_window_and_fields(tmp_path):
    out = journal_line(record("none"), 1_717_236_000_000_000) + journal_line(record("moa", calls=3), 1_717_236_060_000_000)
    env, argv_file = fake_journalctl(tmp_path, stdout=out)
    result = run("--since", "2024-06-01", "--until", "now", "--unit", "optillm-proxy-canary", env=env)
    assert result.exit_code == 0, result.output
    argv = argv_file.read_text().splitlines()
    assert argv[:5] == ["-u", "optillm-proxy-canary", "-o", "json", "--no-pager"]
    assert "OPTILLM_PROXY_RECORD=request" in argv and "--since=2024-06-01" in argv and "--until=now" in argv
    assert any(a.startswith("--output-fields=OPTILLM_PROXY_") for a in argv)
    first = result.stdout.splitlines()[0]
    assert first.startswith("2 request record(s) from the journal of unit optillm-proxy-canary, since 2024-06-01 "
                            "until now, first 2024-06-01 ")


def test_no_records_in_the_journal_names_window_and_unit(tmp_path):
    env, _ = fake_journalctl(tmp_path)
    result = run("--since", "-2h", env=env)
    assert result.exit_code == 0
    assert one_line(result.stdout) == ("no request records in the journal of unit optillm-proxy, "
                                       "since -2h until now")


def test_journalctl_missing_exits_2_one_line(tmp_path):
    result = run(env={"PATH": str(tmp_path)})
    assert result.exit_code == 2
    line = one_line(result.output)
    assert line.startswith("opsctl report: journalctl not found") and "--input FILE" in line


def test_a_time_journalctl_rejects_is_a_usage_error_3(tmp_path):
    env, _ = fake_journalctl(tmp_path, stderr="Failed to parse timestamp: nonsense\n", code=1)
    result = run("--since", "nonsense", env=env)
    assert result.exit_code == 3
    line = one_line(result.output)
    assert "journalctl did not accept the time window: Failed to parse timestamp: nonsense" in line
    assert "yesterday" in line


def test_journalctl_failing_otherwise_exits_2_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(report.os, "geteuid", lambda: 1000)
    env, _ = fake_journalctl(tmp_path, stderr="No journal files were opened due to insufficient permissions.\n",
                             code=1)
    result = run(env=env)
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "journalctl failed (exit 1): No journal files were opened due to insufficient permissions." in line
    assert "systemd-journal" in line and "root" in line


def test_a_user_who_cannot_read_the_system_journal_is_told_not_shown_zero(tmp_path, monkeypatch):
    # journalctl -o json prints no hint: it shows the user's own journal only, exit 0.
    journal = tmp_path / "journal" / "0123abcd"
    journal.mkdir(parents=True)
    (journal / "system.journal").write_bytes(b"")
    monkeypatch.setattr(report, "JOURNAL_DIRS", (str(tmp_path / "journal"),))
    monkeypatch.setattr(report, "_readable", lambda path: False)
    monkeypatch.setattr(report.os, "geteuid", lambda: 1000)
    env, _ = fake_journalctl(tmp_path)
    result = run(env=env)
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "system.journal is not readable by this user" in line and "systemd-journal" in line
    monkeypatch.setattr(report, "_readable", lambda path: True)  # a member of the group: truly none
    assert run(env=env).exit_code == 0


# --- for real -----------------------------------------------------------------------------------


FAN_OUT = {"jerry-xl": ("none", 1), "moa-jerry-xl": ("moa", 3), "bon-jerry-xl": ("bon", 4),
           "plansearch-jerry-xl": ("plansearch", 4), "self_consistency-jerry-xl": ("self_consistency", 5)}


@pytest.mark.real
def test_report_on_a_real_launchers_records(lean_runtime, upstream, tmp_path):
    from tests.test_request_path import chat, launch, post

    server = launch(lean_runtime, tmp_path, upstream.base_url)
    try:
        expected = {}
        for model, (approach, calls) in FAN_OUT.items():
            upstream.reset()
            for _ in range(2):
                r = post(server, chat(model))
                assert r.status_code == 200, r.text
            seen = upstream.calls()
            assert len(seen) == 2 * calls, (model, seen)
            expected[approach] = (calls, sum(10 + 7 * int(c["n"] or 1) for c in seen) / 2)
        upstream.reset()
        r = post(server, chat("cepo-jerry-xl"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "approach-not-allowed"
        assert upstream.calls() == []
        deadline = time.monotonic() + 10  # a record is written when the server closes the answer
        while server.log_text().count("optillm-proxy-record ") < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()

    result = run("--input", str(server.log_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["records"] == 11 and data["malformed"] == 0
    got = {a["approach"]: a for a in data["approaches"]}
    assert list(got) == ["none", "bon", "moa", "plansearch", "self_consistency"]  # base, then by requests, name
    for approach, (calls, tokens) in expected.items():
        row = got[approach]
        assert row["requests"] == 2 and row["error_pct"] == 0.0, row
        assert row["upstream_calls_per_request"] == calls, row
        assert row["upstream_tokens_per_request"] == tokens, row
        assert row["tokens_vs_base"] == round(tokens / expected["none"][1], 3), row
        assert 0 < row["latency_p50_s"] <= row["latency_p95_s"] < 60, row
    assert data["refused"] == {"requests": 1, "rules": {"approach-not-allowed": 1},
                               "no_approach": 0, "no_approach_statuses": {}}
    text = run("--input", str(server.log_path))
    assert text.exit_code == 0 and "refused by policy: 1 (approach-not-allowed 1)" in text.stdout
    print(text.stdout)  # docs/report.md's example is this output's shape
