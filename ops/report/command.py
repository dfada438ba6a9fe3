"""`opsctl report`: its click command."""

from __future__ import annotations

import click

from ops.errors import On, UsageExit3, exits
from ops.report.engine import SourceProblem, UsageProblem


@click.command("report", cls=UsageExit3)
@click.option("--since", metavar="TIME", default=None,
              help="Records from TIME on, as journalctl takes it ('2025-06-01 12:00', 'yesterday', '-2h').")
@click.option("--until", metavar="TIME", default=None, help="Records up to TIME (journalctl's syntax).")
@click.option("--unit", metavar="NAME", default=None, help="systemd unit whose journal to read [default: optillm-proxy].")
@click.option("--input", "input_path", metavar="FILE", default=None,
              help="Read JSON lines (journalctl -o json) or `optillm-proxy-record {json}` lines from FILE "
                   "('-': stdin) instead of the journal; other lines are skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@exits("report", On(UsageProblem, 3, usage=True), On(SourceProblem, 2))
def report(since, until, unit, input_path, as_json) -> None:
    """Per approach, from the request records: requests, error %, p50/p95 latency, upstream calls
    and tokens per request, tokens against the base model ("x base").

    Streams the records (memory does not grow with their number). Latency quantiles come from 2%
    log buckets: within 1%. Reading the system journal needs root or the systemd-journal group.
    Exit 0 report printed (also: no records, said in one line), 2 the journal (or FILE) cannot be
    read, 3 usage (a TIME journalctl rejects included).
    """
    from ops.report import engine as reporting

    result = reporting.run(since, until, unit, input_path)
    click.echo(reporting.render_json(result) if as_json else reporting.render_text(result))


COMMANDS = (report,)
