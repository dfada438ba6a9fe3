"""`opsctl eval`: its click command. The engine loads only when eval runs, its charting library
only for --plot."""

from __future__ import annotations

import click

from ops.errors import On, UsageExit3, exits
from ops.from_launcher.layout import PROXY_URL, UPSTREAM_URL
from ops.probes.client import UsageProblem
from ops.probes.health import KEY_HELP


@click.command("eval", cls=UsageExit3)
@click.option("--tasks", "tasks_path", required=True, metavar="FILE",
              help="JSON lines {id, prompt, answer, scorer}; scorers exact, numeric, regex, choice "
                   "(eval/tasks.jsonl is the shipped set).")
@click.option("--model", "models", required=True, multiple=True, metavar="M",
              help="Model to measure (repeatable); the first is the one the others are compared with.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Ask each task this many times per model.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight at once (one model at a time).")
@click.option("--url", default=PROXY_URL, show_default=True,
              help=f"Proxy base URL, or LiteLLM's ({UPSTREAM_URL.removesuffix('/v1')}).")
@click.option("--api-key", default=None, help=KEY_HELP + " Through LiteLLM: a LiteLLM key.")
@click.option("--metrics-url", default=None, metavar="URL",
              help="Where the proxy's /metrics is read for upstream calls and tokens [default: --url]; "
                   "'none': use the answers' usage.")
@click.option("--timeout", default=300.0, show_default=True, type=float, help="Bound on each request, seconds.")
@click.option("--max-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="max_tokens of each request.")
@click.option("--results", default=None, metavar="FILE",
              help="Results file, appended per answer; re-running resumes from it "
                   "[default: <tasks stem>.eval-<hash of the task file and URL>.jsonl in "
                   "$XDG_STATE_HOME/opsctl/eval, else ~/.local/state/opsctl/eval].")
@click.option("--limit", default=None, type=click.IntRange(1), metavar="N",
              help="Ask only the first N tasks of the file (a sample; a later run without it reuses "
                   "their answers).")
@click.option("--fresh", is_flag=True, help="Start the results file over instead of resuming.")
@click.option("--skip-bad-lines", is_flag=True, help="Skip malformed task lines (reported) instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--plot", default=None, metavar="FILE.svg", help="Also draw accuracy against tokens per task (SVG).")
@exits("eval",
       On(UsageProblem, 3, usage=True),
       On("ops.eval.engine:Unreachable", 2, suffix="; answers so far are kept, run again to resume"),
       On("ops.eval.engine:Refused", 1),
       On(KeyboardInterrupt, 130,
          message="interrupted; answers so far are kept, run the same command again to resume"))
def eval_command(tasks_path, models, repeat, concurrency, url, api_key, metrics_url, timeout, max_tokens,
                 results, limit, fresh, skip_bad_lines, as_json, plot) -> None:
    """Accuracy against cost of each MODEL on your own tasks: accuracy with its 95% interval, latency
    p50/p95, upstream calls and tokens per task, cost against the first model.

    Exit 0 all scored, 1 some answers failed (re-run to retry them), key refused, or a strategy model
    the proxy's counters never saw (no strategy ran), 2 unreachable, 3 usage (a malformed task file
    included: nothing is sent), 130 interrupted (re-run to resume).
    """
    from ops.eval import engine as evaluation
    from ops.probes.client import resolve_api_key

    options, tasks, skipped, sha = evaluation.plan(
        tasks_path, models, repeat, concurrency, url, resolve_api_key(api_key), metrics_url, timeout,
        max_tokens, results, fresh, skip_bad_lines, plot, limit=limit)
    for number, why in skipped:
        click.echo(f"opsctl eval: skipped {tasks_path} line {number}: {why}", err=True)
    report = evaluation.run(options, tasks, skipped, sha)
    click.echo(evaluation.render_json(report) if as_json else evaluation.render_text(report))
    raise click.exceptions.Exit(report.exit_code)


COMMANDS = (eval_command,)
