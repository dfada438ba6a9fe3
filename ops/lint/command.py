"""`opsctl lint`: its click command. The rules load only when lint runs (ops/lint/run.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ops.errors import On, exits
from ops.from_launcher.layout import DEFAULT

# readable=False: an unreadable file is lint's finding (file-unreadable: run as root), not a usage error.
_LINT_PATH = click.Path(path_type=Path, readable=False)


@click.command("lint")
@click.option("--unit", type=_LINT_PATH, help="Unit file, or a directory with drop-ins.")
@click.option("--socket", type=_LINT_PATH,
              help="The socket unit (optillm-proxy.socket) [default: the installed one, if any].")
@click.option("--env-file", type=_LINT_PATH, help="EnvironmentFile= of the unit.")
@click.option("--key-file", type=_LINT_PATH, help="The proxy key (LoadCredential=api-key source).")
@click.option("--upstream-key-file", type=_LINT_PATH,
              help="The LiteLLM key the proxy presents (LoadCredential=upstream-key source).")
@click.option("--proxy-config", type=_LINT_PATH, help="The service user's proxy_config.yaml.")
@click.option("--litellm-config", type=_LINT_PATH, help="LiteLLM config.yaml to check routes.")
@click.option("--venv", type=_LINT_PATH, help="Runtime to check [default: current, if any].")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--ignore", multiple=True, metavar="RULE",
              help="Accept RULE: its findings are not shown (repeatable; not for a rule whose every finding "
                   "is a start the launcher refuses).")
@click.option("--config", type=_LINT_PATH, metavar="FILE",
              help=f"Lint config with an `ignored:` list of rule IDs [default: {DEFAULT.conf_dir / 'lint.yaml'}, "
                   "if present].")
@click.option("--json", "as_json", is_flag=True, help="Findings as a JSON list.")
@click.option("--list-rules", is_flag=True, help="List rule IDs, severities and summaries.")
@click.option("--explain", metavar="RULE", help="Why a rule exists, examples and the fix.")
@exits("lint", On("ops.lint.ignore:IgnoreProblem", 2))
def lint_command(list_rules: bool, explain: str | None, **options) -> None:
    """Check the deployment's files for known misconfigurations.

    One finding per line, PATH:LINE: RULE severity: message. Paths default to where
    install.sh puts them. Exit 0 no error, 1 errors (or warnings with --strict), 2 usage
    (an unknown or unignorable rule in --ignore or the config file included).
    """
    from ops.lint import run

    if list_rules:
        click.echo(run.list_rules(), nl=False)
        return
    if explain is not None:
        click.echo(run.explain(explain), nl=False)
        return
    raise click.exceptions.Exit(run.lint(**options))


COMMANDS = (lint_command,)
