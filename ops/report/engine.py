"""opsctl report: what each approach costs, from the launcher's per-request records.

The launcher writes one record per request (optillm_proxy_launcher.records: native journald fields,
or `optillm-proxy-record {json}` lines on stderr outside systemd). This reads them back as a
stream, by default from `journalctl -o json` restricted to the record fields, or from a file, and
keeps only counters per approach and a fixed log-bucket latency histogram: memory does not grow
with the number of records (weeks of journal are one pass over a pipe).

Per approach: requests, error % (answers with status >= 400; policy refusals never reach an
approach and are counted apart), p50/p95 latency, upstream calls and upstream tokens (prompt +
completion) per request, and "x base": tokens per request over those of the base model itself
(approach "none"). Records without an approach ("-") are policy refusals (by rule) or requests
that ran none (not a chat completion, unauthenticated).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields as dataclass_fields
from pathlib import Path
from typing import Iterable

from ops.from_launcher import records
from ops.from_launcher.layout import SERVICE

FIELD_NAMES, MARKER_FIELD, MARKER_VALUE = records.FIELD_NAMES, records.MARKER_FIELD, records.MARKER_VALUE
NO_APPROACH, PREFIX, STDERR_TAG, Record = records.NO_APPROACH, records.PREFIX, records.STDERR_TAG, records.Record

BASE_APPROACH = "none"  # the base model itself: the launcher's label for a pass-through
# Latency histogram: bucket k >= 1 holds [GROWTH**(k-1), GROWTH**k) ms and reports its geometric
# middle, so a quantile is off by less than sqrt(GROWTH) - 1 (under 1%); ~930 buckets reach a day.
GROWTH = 1.02
RESOLUTION_PCT = 1.0
QUANTILES = (0.5, 0.95)
# Distinct approaches / rules / statuses kept apart; more (only from a damaged input: the launcher
# emits a bounded set) are folded into one, so no input makes memory grow with its length.
MAX_KEYS = 256
OVERFLOW = "(other)"
PERMISSION_HINT = ("run as root (sudo opsctl report) or as a member of the systemd-journal or adm group "
                   "(usermod -aG systemd-journal USER, then log in again)")
TIME_HINT = "TIME as journalctl takes it, e.g. '2025-06-01 12:00', 'yesterday', '-2h', '3 days ago'"
# journalctl's own lines that mean what it printed is not the system journal (exit status 0).
# With -o json it is quiet (no "not seeing messages from other users" hint), hence also the
# check of the system journal files themselves (system_journal_unreadable).
UNREADABLE_MARKERS = ("insufficient permissions", "not seeing messages from other users")
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")


def _field(name: str) -> str:
    """The journal field of Record.<name> (records.py is the one place the names are written)."""
    full = PREFIX + name.upper()
    if name not in {f.name for f in dataclass_fields(Record)} or full not in FIELD_NAMES:
        raise RuntimeError(f"optillm_proxy_launcher.records has no field {name!r}")  # a rename there
    return full


F_APPROACH = _field("approach")
F_STATUS = _field("status")
F_DURATION = _field("duration_ms")
F_CALLS = _field("upstream_calls")
F_PROMPT = _field("upstream_prompt_tokens")
F_COMPLETION = _field("upstream_completion_tokens")
F_RULE = _field("policy_rule")
REALTIME = "__REALTIME_TIMESTAMP"  # journalctl -o json prints it always (microseconds since the epoch)
NEEDED_FIELDS = (MARKER_FIELD, F_APPROACH, F_STATUS, F_DURATION, F_CALLS, F_PROMPT, F_COMPLETION, F_RULE)
_TAG = (STDERR_TAG + " ").encode()
_INV_LOG_GROWTH = 1 / math.log(GROWTH)


class UsageProblem(Exception):
    """Exit 3: the command line (or the time window journalctl was given) is wrong."""


class SourceProblem(Exception):
    """Exit 2: the journal (or the input file) cannot be read."""


# ---------------------------------------------------------------------------------------------
# Aggregation: counters and a histogram per approach, nothing per record


# Per approach, a list (cheaper than an object in the loop): see _new().
REQUESTS, ERRORS, CALLS, TOKENS, MIN_MS, MAX_MS, HIST = range(7)


def _new() -> list:
    return [0, 0, 0, 0, None, None, {}]


def _bucket(ms: int) -> int:
    return int(math.log(ms) * _INV_LOG_GROWTH) + 1 if ms >= 1 else 0


def _bucket_value(k: int) -> float:
    return 0.0 if k == 0 else GROWTH ** (k - 0.5)


class Aggregate:
    def __init__(self) -> None:
        self.approaches: dict[str, list] = {}
        self.rules: dict[str, int] = {}  # policy refusals by rule
        self.other_statuses: dict[str, int] = {}  # no approach, no rule: by status
        self.records = 0
        self.malformed = 0  # record lines that could not be read (counted, skipped)
        self.ignored = 0  # lines that are not records (a server log's other lines)
        self.first_us: int | None = None
        self.last_us: int | None = None

    def feed(self, lines: Iterable[bytes]) -> None:
        """One pass over JSON lines (journal export) or tagged stderr lines; all else is skipped."""
        loads, tag, tag_len = json.loads, _TAG, len(_TAG)
        approaches, rules, other = self.approaches, self.rules, self.other_statuses
        log, inv = math.log, _INV_LOG_GROWTH
        records = malformed = ignored = 0
        first, last = self.first_us, self.last_us
        for line in lines:
            if line[:1] == b"{":
                tagged = False
                payload = line
            else:
                i = line.find(tag)
                if i < 0:
                    ignored += 1
                    continue
                tagged = True
                payload = line[i + tag_len:]
            try:
                rec = loads(payload)
                if rec.get(MARKER_FIELD) != MARKER_VALUE:
                    if tagged:
                        malformed += 1
                    else:
                        ignored += 1  # another journal entry (an export of the whole unit)
                    continue
                approach = rec[F_APPROACH]
                status = int(rec[F_STATUS])
                if approach == NO_APPROACH:
                    rule = rec.get(F_RULE) or ""
                    if type(rule) is not str:
                        raise TypeError(rule)
                    counter, key = (rules, rule) if rule else (other, str(status))
                    if key not in counter and len(counter) >= MAX_KEYS:
                        key = OVERFLOW
                    counter[key] = counter.get(key, 0) + 1
                else:
                    ms = int(rec[F_DURATION])
                    calls = int(rec[F_CALLS])
                    tokens = int(rec[F_PROMPT]) + int(rec[F_COMPLETION])
                    state = approaches.get(approach)
                    if state is None:
                        if type(approach) is not str or not approach:
                            raise TypeError(approach)
                        if len(approaches) >= MAX_KEYS:
                            approach = OVERFLOW
                        state = approaches.get(approach)
                        if state is None:
                            state = approaches[approach] = _new()
                    state[0] += 1
                    if status >= 400:
                        state[1] += 1
                    state[2] += calls
                    state[3] += tokens
                    if state[4] is None or ms < state[4]:
                        state[4] = ms
                    if state[5] is None or ms > state[5]:
                        state[5] = ms
                    k = int(log(ms) * inv) + 1 if ms >= 1 else 0
                    hist = state[6]
                    hist[k] = hist.get(k, 0) + 1
                stamp = rec.get(REALTIME)
                if stamp is not None:
                    us = int(stamp)
                    if first is None or us < first:
                        first = us
                    if last is None or us > last:
                        last = us
            except (ValueError, KeyError, TypeError, AttributeError):
                malformed += 1
                continue
            records += 1
        self.records += records
        self.malformed += malformed
        self.ignored += ignored
        self.first_us, self.last_us = first, last


def quantile(hist: dict[int, int], q: float, low: int, high: int) -> float:
    """Nearest-rank quantile in ms: the bucket's middle, clamped to the smallest and largest seen."""
    total = sum(hist.values())
    rank = max(1, math.ceil(q * total))
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return min(max(_bucket_value(k), low), high)
    return float(high)


# ---------------------------------------------------------------------------------------------
# Sources


def journal_argv(unit: str, since: str | None, until: str | None, journalctl: str = "journalctl") -> list[str]:
    argv = [journalctl, "-u", unit, "-o", "json", "--no-pager",
            "--output-fields=" + ",".join(NEEDED_FIELDS), f"{MARKER_FIELD}={MARKER_VALUE}"]
    if since:
        argv.append(f"--since={since}")
    if until:
        argv.append(f"--until={until}")
    return argv


def _readable(path: str) -> bool:
    return os.access(path, os.R_OK)


def system_journal_unreadable() -> str | None:
    """A system journal file that exists while none is readable by us, or None.

    journalctl run by a user outside systemd-journal/adm reads only that user's own journal and,
    with -o json, says nothing about it: zero records, exit 0. This tells that case apart.
    """
    files = sorted(str(p) for d in JOURNAL_DIRS for p in Path(d).glob("*/system*.journal"))
    if files and not any(_readable(f) for f in files):
        return files[0]
    return None


def read_journal(agg: Aggregate, unit: str, since: str | None, until: str | None) -> None:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise SourceProblem("journalctl not found: run opsctl report on the host that runs the service, "
                            "or export there (journalctl -u optillm-proxy -o json > FILE) and pass --input FILE")
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(journal_argv(unit, since, until, journalctl), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise SourceProblem(f"cannot run {journalctl}: {exc.strerror or exc}") from None
        try:
            agg.feed(proc.stdout)
            proc.stdout.close()
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        said = [line.strip() for line in errors.read(64 * 1024).decode(errors="replace").splitlines() if line.strip()]
    text = " ".join(said)
    if code != 0:
        if since or until:
            timing = [line for line in said if "timestamp" in line.lower() or "--since" in line or "--until" in line]
            if timing:
                raise UsageProblem(f"journalctl did not accept the time window: {timing[0]} ({TIME_HINT})")
        last = said[-1] if said else "no message"
        hint = PERMISSION_HINT if os.geteuid() != 0 else "check: journalctl -u " + unit
        raise SourceProblem(f"journalctl failed (exit {code}): {last}; {hint}")
    if any(marker in text for marker in UNREADABLE_MARKERS):
        line = next(line for line in said if any(m in line for m in UNREADABLE_MARKERS))
        if os.geteuid() != 0:
            raise SourceProblem(f"cannot read the system journal ({line}): {PERMISSION_HINT}")
        raise SourceProblem(f"cannot read the system journal ({line}): is systemd-journald running on this host?")
    if agg.records == 0 and os.geteuid() != 0:
        unreadable = system_journal_unreadable()
        if unreadable:
            raise SourceProblem(f"cannot read the system journal ({unreadable} is not readable by this user): "
                                f"{PERMISSION_HINT}")


def read_file(agg: Aggregate, path: str) -> None:
    if path == "-":
        agg.feed(sys.stdin.buffer)
        return
    try:
        with open(path, "rb") as stream:
            agg.feed(stream)
    except OSError as exc:
        raise SourceProblem(f"cannot read --input {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Row:
    approach: str
    requests: int
    errors: int
    error_pct: float
    latency_p50_s: float
    latency_p95_s: float
    upstream_calls_per_request: float
    upstream_tokens_per_request: float
    tokens_vs_base: float | None


@dataclass(frozen=True)
class Report:
    window: dict
    rows: list[Row]
    rules: dict[str, int]
    other_statuses: dict[str, int]
    records: int
    malformed: int

    @property
    def refused(self) -> int:
        return sum(self.rules.values())

    @property
    def other(self) -> int:
        return sum(self.other_statuses.values())


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(us / 1e6))


def build(agg: Aggregate, window: dict) -> Report:
    def tokens_per_request(state: list) -> float:
        return state[TOKENS] / state[REQUESTS]

    base = agg.approaches.get(BASE_APPROACH)
    base_tokens = tokens_per_request(base) if base else 0.0
    rows = []
    for name, state in agg.approaches.items():
        n, hist, low, high = state[REQUESTS], state[HIST], state[MIN_MS], state[MAX_MS]
        per = tokens_per_request(state)
        rows.append(Row(
            approach=name, requests=n, errors=state[ERRORS], error_pct=round(100 * state[ERRORS] / n, 2),
            latency_p50_s=round(quantile(hist, QUANTILES[0], low, high) / 1000, 3),
            latency_p95_s=round(quantile(hist, QUANTILES[1], low, high) / 1000, 3),
            upstream_calls_per_request=round(state[CALLS] / n, 3),
            upstream_tokens_per_request=round(per, 2),
            tokens_vs_base=round(per / base_tokens, 3) if base_tokens > 0 else None))
    rows.sort(key=lambda r: (r.approach != BASE_APPROACH, -r.requests, r.approach))
    window = {**window, "first_record": _iso(agg.first_us), "last_record": _iso(agg.last_us)}
    by_count = lambda d: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))  # noqa: E731
    return Report(window=window, rows=rows, rules=by_count(agg.rules), other_statuses=by_count(agg.other_statuses),
                  records=agg.records, malformed=agg.malformed)


def run(since: str | None, until: str | None, unit: str | None, input_path: str | None) -> Report:
    if input_path is not None and (since or until or unit):
        raise UsageProblem("--since/--until/--unit select from the journal; with --input, select when "
                           "exporting (journalctl -u optillm-proxy -o json --since ... > FILE)")
    agg = Aggregate()
    if input_path is not None:
        window = {"source": "file", "input": input_path}
        read_file(agg, input_path)
    else:
        unit = unit or SERVICE
        window = {"source": "journal", "unit": unit, "since": since, "until": until}
        read_journal(agg, unit, since, until)
    return build(agg, window)


def describe_window(window: dict) -> str:
    if window["source"] == "file":
        return "stdin" if window["input"] == "-" else f"file {window['input']}"
    since = f"since {window['since']}" if window["since"] else "since the start of the journal"
    until = f"until {window['until']}" if window["until"] else "until now"
    return f"journal of unit {window['unit']}, {since} {until}"


def _count_list(counts: dict[str, int], top: int = 5, label=str) -> str:
    items = list(counts.items())
    shown = ", ".join(f"{label(k)} {v}" for k, v in items[:top])
    return shown + (f", {len(items) - top} more" if len(items) > top else "")


COLUMNS = ("APPROACH", "REQUESTS", "ERROR%", "P50_S", "P95_S", "CALLS/REQ", "TOKENS/REQ", "X_BASE")
RESOLUTION_NOTE = (f"p50/p95: nearest rank over {int(round((GROWTH - 1) * 100))}% log buckets, within "
                   f"{RESOLUTION_PCT:g}%; tokens: upstream prompt + completion; x base: tokens/req over "
                   f"approach {BASE_APPROACH}'s (the base model)")


def render_text(report: Report) -> str:
    where = describe_window(report.window)
    skipped = f" (skipped {report.malformed} malformed record line(s))" if report.malformed else ""
    if report.records == 0:
        return f"no request records in the {where}{skipped}"
    first, last = report.window.get("first_record"), report.window.get("last_record")
    span = f", first {first}, last {last}" if first else ""
    lines = [f"{report.records} request record(s) from the {where}{span}{skipped}"]
    if report.rows:
        cells = [COLUMNS] + [(
            r.approach, str(r.requests), f"{r.error_pct:.1f}", f"{r.latency_p50_s:.3f}", f"{r.latency_p95_s:.3f}",
            f"{r.upstream_calls_per_request:.2f}", f"{r.upstream_tokens_per_request:.1f}",
            "n/a" if r.tokens_vs_base is None else f"{r.tokens_vs_base:.2f}") for r in report.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
        for row in cells:
            lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    else:
        lines.append("no request ran an approach (all refused or not chat completions)")
    if report.refused:
        lines.append(f"refused by policy: {report.refused} ({_count_list(report.rules)})")
    if report.other:
        lines.append(f"no approach (not a chat completion, unauthenticated): {report.other} "
                     f"({_count_list(report.other_statuses, label=lambda s: 'status ' + s)})")
    lines.append(RESOLUTION_NOTE)
    return "\n".join(lines)


def render_json(report: Report) -> str:
    out = {
        "window": report.window,
        "approaches": [{
            "approach": r.approach, "requests": r.requests, "errors": r.errors, "error_pct": r.error_pct,
            "latency_p50_s": r.latency_p50_s, "latency_p95_s": r.latency_p95_s,
            "upstream_calls_per_request": r.upstream_calls_per_request,
            "upstream_tokens_per_request": r.upstream_tokens_per_request,
            "tokens_vs_base": r.tokens_vs_base} for r in report.rows],
        "refused": {"requests": report.refused, "rules": report.rules,
                    "no_approach": report.other, "no_approach_statuses": report.other_statuses},
        "records": report.records,
        "malformed": report.malformed,
        "latency_resolution_pct": RESOLUTION_PCT,
    }
    if report.records == 0:
        out["message"] = render_text(report)
    return json.dumps(out, indent=2)
