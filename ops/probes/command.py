"""`opsctl health` and `opsctl smoke`: the probes' click commands. A plain `opsctl health` never
comes here (ops/cli.py serves it from ops.probes.health without click)."""

from __future__ import annotations

import click

from ops.errors import On, UsageExit3, exits
from ops.from_launcher.layout import BASE_MODEL, DEFAULT, PROXY_URL
from ops.probes.client import UsageProblem
from ops.probes.health import KEY_HELP, options as health_options

URL_HELP = "Proxy base URL."


class _HealthCommand(UsageExit3):
    def report_usage_error(self, message: str, as_json: bool) -> None:
        # Monitoring reads stdout: the UNKNOWN state line is the answer, also for bad arguments.
        from ops.probes.health import unknown

        result = unknown(f"{message} (see opsctl health --help)", "")
        click.echo(result.as_json() if as_json else result.status_line())


def _from_table(table):
    """click options from ops.probes.health's table: the fast path (ops/cli.py) parses the same one."""
    def decorate(func):
        for o in reversed(table):
            if o.kind is bool:
                func = click.option(o.flag, o.dest, is_flag=True, help=o.help)(func)
            else:
                func = click.option(o.flag, o.dest, default=o.default, type=o.kind,
                                    show_default=o.default is not None, help=o.help)(func)
        return func
    return decorate


@click.command("health", cls=_HealthCommand)
@_from_table(health_options())
def health(**values) -> None:
    """Is the proxy up? Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Monitoring Plugins)."""
    from ops.probes import health as probes

    code, line = probes.run(**values)
    click.echo(line)
    raise click.exceptions.Exit(code)


@click.command("smoke", cls=UsageExit3)
@click.argument("models", nargs=-1)
@click.option("--all", "all_models", is_flag=True,
              help="The base model, its moa-/bon-/plansearch-/self_consistency- prefixes, and the plugin "
                   "slugs PROXY_PLUGINS names in the env file (when readable).")
@click.option("--base-model", default=BASE_MODEL, show_default=True, help="Base model for --all and --plugin.")
@click.option("--plugin", "plugins", multiple=True, metavar="SLUG",
              help="Also check the plugin prefix SLUG-<base model> (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help=f"Env file whose PROXY_PLUGINS --all reads [default: {DEFAULT.env_file}].")
@click.option("--url", default=PROXY_URL, show_default=True, help=URL_HELP)
@click.option("--api-key", default=None, help=KEY_HELP)
@click.option("--timeout", default=120.0, show_default=True, type=float,
              help="Bound on the whole run, seconds: every model must answer within it (they run at once; "
                   "strategies make several upstream calls).")
@click.option("--concurrency", default=5, show_default=True, type=click.IntRange(1),
              help="Models checked at once (--all's five by default); later ones start as earlier ones "
                   "finish, within the same --timeout. 1: one after another.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@exits("smoke", On(UsageProblem, 3, usage=True))
def smoke(models, all_models, base_model, plugins, env_file, url, api_key, timeout, concurrency, as_json) -> None:
    """Chat with each MODEL and prove its strategy ran. Exit 0 pass, 1 fail/skipped, 2 unreachable, 3 usage."""
    from ops.probes import smoke as smoking
    from ops.probes.client import parse_base_url, resolve_api_key

    wanted, notes = smoking.plan(models, all_models, base_model, plugins, env_file, timeout)
    base_url = parse_base_url(url)
    key = resolve_api_key(api_key)
    report = smoking.run(base_url, key, wanted, timeout, notes, concurrency=concurrency)
    click.echo(smoking.render_json(report) if as_json else smoking.render_table(report))
    raise click.exceptions.Exit(report.exit_code)


COMMANDS = (health, smoke)
