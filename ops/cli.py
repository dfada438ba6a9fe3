"""opsctl: click wiring only. Each command imports its module lazily so `opsctl health`,
which monitoring runs every minute, pays for nothing it does not use."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate an optillm-proxy (OptiLLM 0.3.12) deployment."""


# --- health (owner: probes) -------------------------------------------------------------------

# --- smoke (owner: probes) --------------------------------------------------------------------

# --- lint (owner: lint) -----------------------------------------------------------------------

# --- fake-upstream ----------------------------------------------------------------------------


@cli.command("fake-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=int)
def fake_upstream(host: str, port: int) -> None:
    """Run a recording OpenAI-compatible upstream (for demos and tests; GET /_calls lists calls)."""
    from ops.fake_upstream import serve

    click.echo(f"fake upstream on http://{host}:{port}/v1 (GET /_calls, POST /_reset)", err=True)
    serve(host, port)


def main() -> None:
    cli()
