"""`opsctl install`: what install.sh hands over to once opsctl's venv exists. The flags are
install.sh's (ops.install.options parses them and owns the --help text); the run is ops.install.main."""

from __future__ import annotations

import sys

import click


@click.command("install", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def install_command(args: tuple[str, ...]) -> None:
    """Install or re-run the install of the service (install.sh's flags: opsctl install --help)."""
    from ops.install.main import main

    sys.exit(main(list(args)))


COMMANDS = (install_command,)
