"""`opsctl eval`: does a strategy pay for itself on the operator's own tasks?

Each task of a task file (ops/eval/tasks.py) is asked of each model, `--repeat` times, through the
proxy (default) or through LiteLLM, `--concurrency` requests at a time, one model after the other.
Per model: accuracy with its 95% Wilson score interval (ops/eval/stats.py), latency p50/p95, upstream
calls and tokens per task (the proxy's /metrics when it serves them, else the answers' usage, said
per row: ops/eval/metrics.py), and the cost multiplier against the first model.

Every answer is appended to a results file as it comes (ops/eval/results.py): an interrupted run is
resumed by running the same command again; answers already scored are not asked again.

Exit codes: 0 every (task, repeat) of every model scored; 1 some could not be (errors: run again to
retry them) or the key was refused; 2 the URL is unreachable (nothing answers there); 3 usage (bad
option, unreadable or malformed task file: nothing is sent); 130 interrupted (answers so far kept).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ops.probes.client import ApiKey, UsageProblem
from ops.eval.results import ResultsFile, Row, add_costs, default_path, row_for
from ops.eval.tasks import Task, TaskFileProblem, load

OK, INCOMPLETE, UNREACHABLE, USAGE, INTERRUPTED = 0, 1, 2, 3, 130
# A model whose first answers are all errors (not routed, approach not allowed) is given up after
# this many in a row, instead of failing every task the same way.
GIVE_UP_AFTER = 5
CONNECT_TIMEOUT = 10.0
METRICS_SETTLE_SECONDS = 3.0


class Unreachable(Exception):
    """Nothing answers at the URL: exit 2."""


class Refused(Exception):
    """The key was refused (401): exit 1, nothing more is sent."""


@dataclass
class Options:
    tasks_path: str
    models: list[str]
    repeat: int = 1
    concurrency: int = 4
    base_url: str = ""
    key: ApiKey = field(default_factory=lambda: ApiKey(None, "none"))
    metrics_url: str | None = None  # None: no metrics
    timeout: float = 300.0
    max_tokens: int = 1024
    results_path: str | None = None
    fresh: bool = False
    skip_bad_lines: bool = False
    plot: str | None = None


@dataclass
class Report:
    url: str
    tasks_path: str
    tasks: int
    repeat: int
    results_path: str
    reused: int  # answers taken from an earlier run
    asked: int = 0  # requests sent by this run
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: str | None = None
    # Strategy models the proxy counted none of while this run asked them: no strategy ran.
    unrouted: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        complete = self.rows and all(r.errors == 0 and r.missing == 0 for r in self.rows)
        return OK if complete and not self.unrouted else INCOMPLETE


def approach_label(model: str) -> str:
    """The launcher's approach label for a model name: its prefix, `none` for a base model."""
    from ops.probes.smoke import approach_of

    return approach_of(model) or "none"


def plan(tasks_path: str, models: tuple[str, ...], repeat: int, concurrency: int, url: str, key: ApiKey,
         metrics_url: str | None, timeout: float, max_tokens: int, results: str | None, fresh: bool,
         skip_bad_lines: bool, plot: str | None, limit: int | None = None
         ) -> tuple[Options, list[Task], list[tuple[int, str]], str]:
    """Validated options and the parsed task file (its first `limit` tasks when given); UsageProblem
    (exit 3) before anything is sent."""
    from ops.probes.client import parse_base_url

    if not models:
        raise UsageProblem("name at least one --model (the first is the one the others are compared with)")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise UsageProblem(f"--model {', '.join(duplicates)} given twice")
    if timeout <= 0:
        raise UsageProblem(f"--timeout must be > 0 seconds (got {timeout:g})")
    base_url = parse_base_url(url)
    if metrics_url is None:
        metrics = base_url
    elif metrics_url.strip().lower() in ("", "none", "off"):
        metrics = None
    else:
        metrics = parse_base_url(metrics_url)
    if plot is not None:
        from ops.eval.plot import check_path

        try:
            check_path(plot)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
    try:
        tasks, bad, sha = load(tasks_path, skip_bad_lines)
    except TaskFileProblem as exc:
        raise UsageProblem(str(exc)) from None
    if limit is not None:
        tasks = tasks[:limit]
    options = Options(tasks_path=tasks_path, models=list(models), repeat=repeat, concurrency=concurrency,
                      base_url=base_url, key=key, metrics_url=metrics, timeout=timeout, max_tokens=max_tokens,
                      results_path=results, fresh=fresh, skip_bad_lines=skip_bad_lines, plot=plot)
    return options, tasks, bad, sha


# ---------------------------------------------------------------------------------------------
# One request


def request_body(model: str, task: Task, max_tokens: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": task.prompt}], "max_tokens": max_tokens}


def error_text(response) -> str:
    """An error answer's message as the proxy (or LiteLLM) wrote it, cut to 300 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or "(empty body)"
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message", err)
    return str(err)[:300]


def ask(client, model: str, task: Task, rep: int, options: Options, clock=time.monotonic) -> dict:
    """One task asked of one model: a result or error record. Raises Unreachable or Refused."""
    from ops.probes.client import import_httpx

    httpx = import_httpx()
    base = {"model": model, "task": task.id, "fp": task.fingerprint, "rep": rep}
    start = clock()
    try:
        response = client.post("/v1/chat/completions", json=request_body(model, task, options.max_tokens),
                               headers=options.key.headers())
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unreachable(f"unreachable at {options.base_url}: {exc or type(exc).__name__} "
                          "(is optillm-proxy, or LiteLLM, running there?)") from None
    except httpx.TimeoutException:
        return {"kind": "error", **base, "status": None, "error": f"no answer within --timeout {options.timeout:g}s"}
    except httpx.HTTPError as exc:
        return {"kind": "error", **base, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    latency = clock() - start
    if response.status_code == 401:
        raise Refused(f"401 for {model}: the key from {options.key.source} was refused; pass --api-key or set "
                      "OPSCTL_API_KEY to the key of the URL (the proxy key, or a LiteLLM key)")
    if response.status_code != 200:
        text = error_text(response)
        return {"kind": "error", **base, "status": response.status_code, "error": text}
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return {"kind": "error", **base, "status": 200, "error": "200 but not a chat completion with content"}
    if not isinstance(content, str):
        return {"kind": "error", **base, "status": 200, "error": "200 but the answer has no text content"}
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
    completion_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
    if approach_label(model) != "none" and completion_tokens == 0:
        # optillm 0.3.12's moa/bon/majority_voting swallow upstream errors into a 200 (ops/probes/smoke.py).
        return {"kind": "error", **base, "status": 200,
                "error": f"upstream error via proxy: no completion from the upstream ({content.strip()[:120]!r})"}
    return {"kind": "result", **base, "correct": task.score(content), "latency_s": round(latency, 4),
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "reply": content[:300]}


# ---------------------------------------------------------------------------------------------
# The run


class Progress:
    """click's progress bar on a terminal (stderr, so --json's stdout stays clean); nothing when piped."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        if enabled and total:
            import click

            self._bar = click.progressbar(length=total, file=sys.stderr, label="", show_pos=True, width=30)
            self._bar.__enter__()

    def label(self, text: str) -> None:
        if self._bar is not None:
            self._bar.label = text
            self._bar.render_progress()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def run_model(client, results: ResultsFile, model: str, todo: list[tuple[Task, int]], options: Options,
              progress: Progress, notes: list[str], clock=time.monotonic, unrouted: list[str] | None = None) -> int:
    """Ask `todo` of one model, `options.concurrency` at a time, appending each answer; the requests sent.
    A strategy model whose answers the proxy's counters never saw is added to `unrouted`."""
    from ops.eval import metrics as eval_metrics

    approach = approach_label(model)
    before = eval_metrics.snapshot(client, options.metrics_url)
    sent = scored = errors_in_a_row = 0
    last_error = ""
    # Daemon workers (not concurrent.futures, whose threads the interpreter joins at exit): after a
    # Ctrl-C or a fatal answer the command ends at once, not when the requests in flight end.
    jobs: queue.Queue = queue.Queue()
    answers: queue.Queue = queue.Queue()

    def worker() -> None:
        while (item := jobs.get()) is not None:
            try:
                answers.put((True, ask(client, model, item[0], item[1], options, clock)))
            except BaseException as exc:  # handed to the main thread
                answers.put((False, exc))

    workers = [threading.Thread(target=worker, name="opsctl-eval", daemon=True) for _ in range(options.concurrency)]
    for thread in workers:
        thread.start()
    remaining = iter(todo)
    in_flight = 0
    stop = False
    try:
        while True:
            # At most `concurrency` handed out at a time: a stop sends nothing more.
            while not stop and in_flight < options.concurrency:
                item = next(remaining, None)
                if item is None:
                    break
                jobs.put(item)
                in_flight += 1
            if not in_flight:
                break
            ok, record = answers.get()
            in_flight -= 1
            if not ok:
                raise record
            results.append(record)
            sent += 1
            progress.advance()
            if record["kind"] == "result":
                scored += 1
                errors_in_a_row = 0
            else:
                errors_in_a_row += 1
                last_error = f"{record['status'] or 'no answer'}: {record['error']}"
            if not stop and scored == 0 and errors_in_a_row >= GIVE_UP_AFTER:
                stop = True
                notes.append(f"{model}: gave up after {errors_in_a_row} errors in a row and no answer "
                             f"(last {last_error}); is the model routed and its approach allowed?")
    finally:
        for _ in workers:
            jobs.put(None)
    if before is None:
        return sent
    # The launcher counts a request when its answer has been sent: the last answers can reach us
    # before their counts do. Wait (briefly) until every answer we scored is counted; a model the
    # proxy never sees (the base model through LiteLLM) stays at 0 and is not waited for long.
    start = clock()
    while True:
        after = eval_metrics.snapshot(client, options.metrics_url)
        if after is None:
            return sent
        delta = after.get(approach, eval_metrics.Counts()).minus(before.get(approach, eval_metrics.Counts()))
        waited = clock() - start
        if delta.requests >= scored or waited >= METRICS_SETTLE_SECONDS or (delta.requests == 0 and waited >= 0.5):
            break
        time.sleep(0.05)
    if delta.requests == 0 and scored and approach != "none":
        notes.append(f"{model}: the proxy at {options.metrics_url} counted none of its {scored} answered "
                     f"request(s) for approach {approach}: whatever answered, no {approach} strategy ran there "
                     "(does LiteLLM route this model to the proxy?)")
        if unrouted is not None:
            unrouted.append(model)
    if delta.requests > 0:
        results.append({"kind": "batch", "model": model, "approach": approach, "sent": sent,
                        "requests": delta.requests, "calls": delta.calls, "prompt_tokens": delta.prompt_tokens,
                        "completion_tokens": delta.completion_tokens})
    return sent


def make_transport(base_url: str):
    """No retries (a retried strategy request costs its calls twice); plain http needs no CA bundle."""
    from ops.probes.client import import_httpx

    return import_httpx().HTTPTransport(verify=not base_url.startswith("http://"), retries=0)


def run(options: Options, tasks: list[Task], skipped: list[tuple[int, str]], tasks_sha: str,
        transport=None, show_progress: bool | None = None, clock=time.monotonic) -> Report:
    """Ask what is left to ask and add up the results file. Raises Unreachable, Refused,
    KeyboardInterrupt (each after keeping every answer so far), UsageProblem (results file)."""
    from ops.probes.client import import_httpx

    path = Path(options.results_path) if options.results_path else default_path(options.tasks_path, tasks_sha,
                                                                              options.base_url)
    try:
        results = ResultsFile.open(path, options.fresh)
    except OSError as exc:
        raise UsageProblem(f"cannot use results file {path}: {exc.strerror or exc} (choose one with --results)") from None
    report = Report(url=options.base_url, tasks_path=options.tasks_path, tasks=len(tasks), repeat=options.repeat,
                    results_path=str(path), reused=0, skipped_lines=list(skipped), plot=options.plot)
    if results.unreadable:
        report.notes.append(f"{results.unreadable} unreadable line(s) in {path} skipped (a run killed mid-write)")
    todo: dict[str, list[tuple[Task, int]]] = {}
    for model in options.models:
        done = results.done(model, tasks)
        todo[model] = [(t, rep) for rep in range(options.repeat) for t in tasks if (t.id, rep) not in done]
        report.reused += len(tasks) * options.repeat - len(todo[model])
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    progress = Progress(sum(len(v) for v in todo.values()), show_progress)
    httpx = import_httpx()
    if transport is None:
        transport = make_transport(options.base_url)
    limits = httpx.Limits(max_connections=options.concurrency + 2, max_keepalive_connections=options.concurrency + 2)
    try:
        with httpx.Client(base_url=options.base_url, transport=transport, follow_redirects=False, trust_env=False,
                          timeout=httpx.Timeout(options.timeout, connect=CONNECT_TIMEOUT), limits=limits) as client:
            for model in options.models:
                if todo[model]:
                    progress.label(model)
                    report.asked += run_model(client, results, model, todo[model], options, progress,
                                              report.notes, clock, report.unrouted)
    finally:
        progress.close()
        results.close()
    report.rows = [row_for(results.records, m, approach_label(m), tasks, options.repeat) for m in options.models]
    add_costs(report.rows)
    if options.plot:
        from ops.eval.plot import write

        try:
            write(options.plot, report.rows, f"opsctl eval: {Path(options.tasks_path).name}, {len(tasks)} tasks "
                                             f"x {options.repeat}")
        except (OSError, ValueError) as exc:
            report.notes.append(f"no chart written to {options.plot}: {exc}")
            report.plot = None
    return report


# ---------------------------------------------------------------------------------------------
# Rendering


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def verdict(row: Row, first: Row) -> str | None:
    if row is first or row.accuracy is None or first.accuracy is None:
        return None
    if row.ci_low > first.ci_high:
        outcome = "better (its interval is above the first's)"
    elif row.ci_high < first.ci_low:
        outcome = "WORSE (its interval is below the first's)"
    else:
        outcome = "no clear difference at this sample size (the intervals overlap)"
    cost = f", {row.cost_vs_first:.2f}x the {row.cost_basis}" if row.cost_vs_first is not None else ""
    return f"{row.model} vs {first.model}: {outcome}{cost}"


COLUMNS = ("MODEL", "ANSWERS", "ACCURACY", "95% CI", "P50_S", "P95_S", "CALLS/TASK", "TOKENS/TASK", "COST_X", "SOURCE")


def render_text(report: Report) -> str:
    lines = [f"opsctl eval: {report.tasks} task(s) from {report.tasks_path} x {report.repeat} repeat(s) via "
             f"{report.url}; results in {report.results_path} ({report.asked} asked now, "
             f"{report.reused} reused from an earlier run)"]
    cells = [COLUMNS] + [(
        r.model, str(r.samples), _fmt(r.accuracy, ".3f"),
        "-" if r.ci_low is None else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
        _fmt(r.latency_p50_s, ".3f"), _fmt(r.latency_p95_s, ".3f"), _fmt(r.upstream_calls_per_task, ".2f"),
        _fmt(r.tokens_per_task, ".1f"), _fmt(r.cost_vs_first, ".2f"), r.source) for r in report.rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    for c in cells:
        lines.append("  ".join([c[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(c[1:-1], widths[1:-1])]
                               + [c[-1]]).rstrip())
    first = report.rows[0] if report.rows else None
    for row in report.rows:
        said = verdict(row, first)
        if said:
            lines.append(said)
    for row in report.rows:
        if row.errors or row.missing:
            lines.append(f"{row.model}: {row.errors} answer(s) failed, {row.missing} not asked; run the same "
                         "command again to ask them")
        if row.other_requests:
            lines.append(f"{row.model}: {row.other_requests} other request(s) with approach {row.approach} went "
                         "through the proxy meanwhile; calls and tokens are averages over all of them")
    for number, why in report.skipped_lines:
        lines.append(f"skipped {report.tasks_path} line {number}: {why}")
    lines += [f"note: {n}" for n in report.notes]
    if report.plot:
        lines.append(f"chart: {report.plot}")
    lines.append("accuracy: correct / answers scored; 95% CI: Wilson score interval; calls and tokens per task: "
                 "proxy metrics = upstream calls and prompt+completion tokens counted by the proxy for the "
                 "model's approach, answer usage = the answer's completion tokens (no call count); "
                 "cost x: tokens per task over the first model's")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps({
        "url": report.url, "tasks_file": report.tasks_path, "tasks": report.tasks, "repeat": report.repeat,
        "results_file": report.results_path, "asked": report.asked, "reused": report.reused,
        "interval": "wilson score, 95%",
        "models": [asdict(r) for r in report.rows],
        "skipped_lines": [{"line": n, "reason": why} for n, why in report.skipped_lines],
        "notes": report.notes, "unrouted": report.unrouted, "plot": report.plot, "exit_code": report.exit_code,
    }, indent=2)
