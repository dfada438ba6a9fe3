"""`opsctl eval`'s results file, and the per-model rows it adds up to (stdlib only).

JSON lines, appended and flushed one per answered request, so an interrupted run keeps everything it
got and the same command resumes where it stopped:

- `{"kind": "result", "model", "task", "fp", "rep", "correct", "latency_s", "prompt_tokens",
  "completion_tokens", "reply", "at"}`: one scored answer (`fp` is the task's fingerprint: a task
  whose prompt, answer or scorer changed is asked again; `reply` is cut to 300 characters).
- `{"kind": "error", "model", "task", "fp", "rep", "error", "status", "at"}`: no answer to score
  (HTTP error, timeout); asked again by the next run.
- `{"kind": "batch", "model", "approach", "sent", "requests", "calls", "prompt_tokens",
  "completion_tokens", "at"}`: the proxy's counters for the model's approach, after minus before one
  run of that model (see ops/eval/metrics.py); absent when /metrics was not the proxy's.

A line that cannot be read (a run killed mid-write) is skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.eval.metrics import SOURCE_METRICS, SOURCE_USAGE
from ops.eval.stats import nearest_rank, wilson

REPLY_CHARS = 300


def state_dir() -> Path:
    """$XDG_STATE_HOME/opsctl/eval, else ~/.local/state/opsctl/eval: the user's own, so the default
    results file can be written wherever the command runs (a read-only checkout included)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opsctl" / "eval"


def default_path(tasks_path: str, tasks_sha256: str, base_url: str) -> Path:
    """`<task file stem>.eval-<hash>.jsonl` in state_dir(): the same task file (content) and URL
    resume the same results; another task set or URL starts its own file."""
    key = hashlib.sha256(f"{tasks_sha256}\n{base_url}".encode()).hexdigest()[:10]
    return state_dir() / f"{Path(tasks_path).stem}.eval-{key}.jsonl"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class ResultsFile:
    path: Path
    records: list[dict] = field(default_factory=list)
    unreadable: int = 0
    _stream: object = None

    @classmethod
    def open(cls, path: Path, fresh: bool = False) -> "ResultsFile":
        """Read what an earlier run left (unless fresh) and open the file for appending.

        The directory is created (0700: replies may be private) when missing; OSError (no
        permission, a read-only file system) goes to the caller."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        results = cls(path)
        if fresh and path.exists():
            path.unlink()
        if path.exists():
            with open(path, "rb") as stream:
                for raw in stream:
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        results.unreadable += 1
                        continue
                    if isinstance(record, dict) and record.get("kind") in ("result", "error", "batch"):
                        results.records.append(record)
                    else:
                        results.unreadable += 1
        stream = open(path, "a", encoding="utf-8")
        if stream.tell() > 0:
            # A line cut by a kill has no newline: start ours on a line of its own.
            with open(path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    stream.write("\n")
        results._stream = stream
        return results

    def append(self, record: dict) -> None:
        record = {**record, "at": now()}
        self.records.append(record)
        self._stream.write(json.dumps(record, sort_keys=True) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def done(self, model: str, tasks) -> set[tuple[str, int]]:
        """(task id, rep) of the model already scored, for the current version of each task."""
        fingerprints = {t.id: t.fingerprint for t in tasks}
        return {(r["task"], r["rep"]) for r in self.records
                if r["kind"] == "result" and r.get("model") == model
                and fingerprints.get(r.get("task")) == r.get("fp")}


@dataclass
class Row:
    model: str
    approach: str
    tasks: int  # distinct tasks with at least one scored answer
    samples: int  # scored answers (tasks x repeats)
    correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    errors: int  # (task, repeat) still without a scored answer after an error
    missing: int  # (task, repeat) never asked (interrupted before)
    latency_p50_s: float | None
    latency_p95_s: float | None
    upstream_calls_per_task: float | None
    tokens_per_task: float | None
    prompt_tokens_per_task: float | None
    completion_tokens_per_task: float | None
    source: str
    other_requests: int = 0  # requests of the same approach during our runs that were not ours
    cost_vs_first: float | None = None
    cost_basis: str | None = None


def _latest(records: list[dict], model: str, fingerprints: dict[str, str], repeat: int) -> dict:
    """(task, rep) -> the last result, or the last error if none was scored."""
    latest: dict[tuple[str, int], dict] = {}
    for r in records:
        if r.get("model") != model or r["kind"] not in ("result", "error"):
            continue
        key = (r.get("task"), r.get("rep"))
        if fingerprints.get(key[0]) != r.get("fp") or not isinstance(key[1], int) or not 0 <= key[1] < repeat:
            continue
        if r["kind"] == "result" or latest.get(key, {}).get("kind") != "result":
            latest[key] = r
    return latest


def row_for(records: list[dict], model: str, approach: str, tasks, repeat: int) -> Row:
    fingerprints = {t.id: t.fingerprint for t in tasks}
    latest = _latest(records, model, fingerprints, repeat)
    scored = [r for r in latest.values() if r["kind"] == "result"]
    errors = sum(1 for r in latest.values() if r["kind"] == "error")
    correct = sum(1 for r in scored if r.get("correct") is True)
    n = len(scored)
    low, high = wilson(correct, n) if n else (None, None)
    latencies = [float(r["latency_s"]) for r in scored if isinstance(r.get("latency_s"), (int, float))]
    batches = [r for r in records if r["kind"] == "batch" and r.get("model") == model
               and isinstance(r.get("requests"), (int, float)) and r["requests"] > 0]
    calls = tokens = prompt = completion = None
    other = 0
    if batches:
        source = SOURCE_METRICS
        requests = sum(b["requests"] for b in batches)
        calls = sum(b.get("calls", 0) for b in batches) / requests
        prompt = sum(b.get("prompt_tokens", 0) for b in batches) / requests
        completion = sum(b.get("completion_tokens", 0) for b in batches) / requests
        tokens = prompt + completion
        other = max(0, int(round(requests - sum(b.get("sent", 0) for b in batches))))
    else:
        source = SOURCE_USAGE
        reported = [r["completion_tokens"] for r in scored if isinstance(r.get("completion_tokens"), (int, float))]
        if reported:
            completion = tokens = sum(reported) / len(reported)
    return Row(
        model=model, approach=approach, tasks=len({r["task"] for r in scored}), samples=n, correct=correct,
        accuracy=round(correct / n, 4) if n else None,
        ci_low=round(low, 4) if low is not None else None, ci_high=round(high, 4) if high is not None else None,
        errors=errors, missing=len(tasks) * repeat - len(latest),
        latency_p50_s=_round(nearest_rank(latencies, 0.5), 3), latency_p95_s=_round(nearest_rank(latencies, 0.95), 3),
        upstream_calls_per_task=_round(calls, 3), tokens_per_task=_round(tokens, 2),
        prompt_tokens_per_task=_round(prompt, 2), completion_tokens_per_task=_round(completion, 2),
        source=source, other_requests=other)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


BASIS_TOTAL = "upstream prompt+completion tokens"
BASIS_COMPLETION = "completion tokens"


def add_costs(rows: list[Row]) -> None:
    """cost_vs_first: tokens per task over the first model's, on a basis both rows have: prompt +
    completion when both come from the proxy's metrics, else completion tokens only."""
    if not rows:
        return
    first = rows[0]
    for row in rows:
        both_metrics = row.source == SOURCE_METRICS and first.source == SOURCE_METRICS
        mine, theirs, basis = ((row.tokens_per_task, first.tokens_per_task, BASIS_TOTAL) if both_metrics else
                               (row.completion_tokens_per_task, first.completion_tokens_per_task, BASIS_COMPLETION))
        if mine is not None and theirs:
            row.cost_vs_first = round(mine / theirs, 3)
            row.cost_basis = basis
