"""opsctl's commands: click wiring only. Each command imports its module when it runs; ops/cli.py
(the entry point) serves a plain `opsctl health` without importing this module or click at all."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate an optillm-proxy (OptiLLM 0.3.12) deployment."""


# --- health (owner: probes) -------------------------------------------------------------------


class _UsageExit3(click.Command):
    """Monitoring contract: a usage error exits 3 (click's default is 2) for health and smoke only."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args  # click consumes `args` while parsing
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            self.report_usage_error(exc.format_message(), wants_json)
            raise click.exceptions.Exit(3) from None

    def report_usage_error(self, message: str, as_json: bool) -> None:
        click.echo(f"opsctl {self.name}: {message} (see opsctl {self.name} --help)", err=True)


class _HealthCommand(_UsageExit3):
    def report_usage_error(self, message: str, as_json: bool) -> None:
        # Monitoring reads stdout: the UNKNOWN state line is the answer, also for bad arguments.
        from ops.health import unknown

        result = unknown(f"{message} (see opsctl health --help)", "")
        click.echo(result.as_json() if as_json else result.status_line())


from ops.health import KEY_HELP as _KEY_HELP  # noqa: E402 - stdlib-only, imported by every path
from ops.health import options as _health_options  # noqa: E402
from ops.layout import BASE_MODEL, DEFAULT, LISTEN_HOST, PROXY_URL, UPSTREAM_PORT, UPSTREAM_URL  # noqa: E402 - stdlib-only and small

_URL_HELP = "Proxy base URL."


def _from_table(table):
    """click options from ops.health's table: the fast path (ops/cli.py) parses the same one."""
    def decorate(func):
        for o in reversed(table):
            if o.kind is bool:
                func = click.option(o.flag, o.dest, is_flag=True, help=o.help)(func)
            else:
                func = click.option(o.flag, o.dest, default=o.default, type=o.kind,
                                    show_default=o.default is not None, help=o.help)(func)
        return func
    return decorate


@cli.command("health", cls=_HealthCommand)
@_from_table(_health_options())
def health(**values) -> None:
    """Is the proxy up? Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Monitoring Plugins)."""
    from ops import health as probes

    code, line = probes.run(**values)
    click.echo(line)
    raise click.exceptions.Exit(code)


# --- smoke (owner: probes) --------------------------------------------------------------------


@cli.command("smoke", cls=_UsageExit3)
@click.argument("models", nargs=-1)
@click.option("--all", "all_models", is_flag=True,
              help="The base model, its moa-/bon-/plansearch-/self_consistency- prefixes, and the plugin "
                   "slugs PROXY_PLUGINS names in the env file (when readable).")
@click.option("--base-model", default=BASE_MODEL, show_default=True, help="Base model for --all and --plugin.")
@click.option("--plugin", "plugins", multiple=True, metavar="SLUG",
              help="Also check the plugin prefix SLUG-<base model> (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help=f"Env file whose PROXY_PLUGINS --all reads [default: {DEFAULT.env_file}].")
@click.option("--url", default=PROXY_URL, show_default=True, help=_URL_HELP)
@click.option("--api-key", default=None, help=_KEY_HELP)
@click.option("--timeout", default=120.0, show_default=True, type=float,
              help="Bound on the whole run, seconds: every model must answer within it (they run at once; "
                   "strategies make several upstream calls).")
@click.option("--concurrency", default=5, show_default=True, type=click.IntRange(1),
              help="Models checked at once (--all's five by default); later ones start as earlier ones "
                   "finish, within the same --timeout. 1: one after another.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def smoke(models, all_models, base_model, plugins, env_file, url, api_key, timeout, concurrency, as_json) -> None:
    """Chat with each MODEL and prove its strategy ran. Exit 0 pass, 1 fail/skipped, 2 unreachable, 3 usage."""
    from ops import smoke as smoking
    from ops.client import UsageProblem, parse_base_url, resolve_api_key

    try:
        wanted, notes = smoking.plan(models, all_models, base_model, plugins, env_file, timeout)
        base_url = parse_base_url(url)
        key = resolve_api_key(api_key)
    except UsageProblem as exc:
        click.echo(f"opsctl smoke: {exc} (see opsctl smoke --help)", err=True)
        raise click.exceptions.Exit(3) from None
    try:
        report = smoking.run(base_url, key, wanted, timeout, notes, concurrency=concurrency)
    except Exception as exc:  # one line, never a traceback
        click.echo(f"opsctl smoke: internal error: {type(exc).__name__}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(smoking.render_json(report) if as_json else smoking.render_table(report))
    raise click.exceptions.Exit(report.exit_code)


# --- lint (owner: lint) -----------------------------------------------------------------------


from pathlib import Path as _Path  # noqa: E402 - kept in this section; cheap to import

# readable=False: an unreadable file is lint's finding (file-unreadable: run as root), not a usage error.
_LINT_PATH = click.Path(path_type=_Path, readable=False)


@cli.command("lint")
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
def lint_command(list_rules: bool, explain: str | None, **options) -> None:
    """Check the deployment's files for known misconfigurations.

    One finding per line, PATH:LINE: RULE severity: message. Paths default to where
    install.sh puts them. Exit 0 no error, 1 errors (or warnings with --strict), 2 usage
    (an unknown or unignorable rule in --ignore or the config file included).
    """
    from ops.lint import command
    from ops.lint.ignore import IgnoreProblem

    if list_rules:
        click.echo(command.list_rules(), nl=False)
        return
    if explain is not None:
        click.echo(command.explain(explain), nl=False)
        return
    try:
        code = command.lint(**options)
    except IgnoreProblem as exc:
        click.echo(f"opsctl lint: {exc}", err=True)
        raise SystemExit(2) from None
    raise SystemExit(code)


# --- report (owner: records) ------------------------------------------------------------------


@cli.command("report", cls=_UsageExit3)
@click.option("--since", metavar="TIME", default=None,
              help="Records from TIME on, as journalctl takes it ('2025-06-01 12:00', 'yesterday', '-2h').")
@click.option("--until", metavar="TIME", default=None, help="Records up to TIME (journalctl's syntax).")
@click.option("--unit", metavar="NAME", default=None, help="systemd unit whose journal to read [default: optillm-proxy].")
@click.option("--input", "input_path", metavar="FILE", default=None,
              help="Read JSON lines (journalctl -o json) or `optillm-proxy-record {json}` lines from FILE "
                   "('-': stdin) instead of the journal; other lines are skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def report(since, until, unit, input_path, as_json) -> None:
    """Per approach, from the request records: requests, error %, p50/p95 latency, upstream calls
    and tokens per request, tokens against the base model ("x base").

    Streams the records (memory does not grow with their number). Latency quantiles come from 2%
    log buckets: within 1%. Reading the system journal needs root or the systemd-journal group.
    Exit 0 report printed (also: no records, said in one line), 2 the journal (or FILE) cannot be
    read, 3 usage (a TIME journalctl rejects included).
    """
    from ops import report as reporting

    try:
        result = reporting.run(since, until, unit, input_path)
    except reporting.UsageProblem as exc:
        click.echo(f"opsctl report: {exc} (see opsctl report --help)", err=True)
        raise click.exceptions.Exit(3) from None
    except reporting.SourceProblem as exc:
        click.echo(f"opsctl report: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except Exception as exc:  # one line, never a traceback
        click.echo(f"opsctl report: internal error: {type(exc).__name__}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(reporting.render_json(result) if as_json else reporting.render_text(result))


# --- eval (owner: eval) -----------------------------------------------------------------------


@cli.command("eval", cls=_UsageExit3)
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
@click.option("--api-key", default=None, help=_KEY_HELP + " Through LiteLLM: a LiteLLM key.")
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
def eval_command(tasks_path, models, repeat, concurrency, url, api_key, metrics_url, timeout, max_tokens,
                 results, limit, fresh, skip_bad_lines, as_json, plot) -> None:
    """Accuracy against cost of each MODEL on your own tasks: accuracy with its 95% interval, latency
    p50/p95, upstream calls and tokens per task, cost against the first model.

    Exit 0 all scored, 1 some answers failed (re-run to retry them), key refused, or a strategy model
    the proxy's counters never saw (no strategy ran), 2 unreachable, 3 usage (a malformed task file
    included: nothing is sent), 130 interrupted (re-run to resume).
    """
    from ops import eval as evaluation
    from ops.client import UsageProblem, resolve_api_key

    try:
        options, tasks, skipped, sha = evaluation.plan(
            tasks_path, models, repeat, concurrency, url, resolve_api_key(api_key), metrics_url, timeout,
            max_tokens, results, fresh, skip_bad_lines, plot, limit=limit)
        for number, why in skipped:
            click.echo(f"opsctl eval: skipped {tasks_path} line {number}: {why}", err=True)
        report = evaluation.run(options, tasks, skipped, sha)
    except UsageProblem as exc:
        click.echo(f"opsctl eval: {exc} (see opsctl eval --help)", err=True)
        raise click.exceptions.Exit(3) from None
    except evaluation.Unreachable as exc:
        click.echo(f"opsctl eval: {exc}; answers so far are kept, run again to resume", err=True)
        raise click.exceptions.Exit(2) from None
    except evaluation.Refused as exc:
        click.echo(f"opsctl eval: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    except KeyboardInterrupt:
        click.echo("opsctl eval: interrupted; answers so far are kept, run the same command again to resume",
                   err=True)
        raise click.exceptions.Exit(130) from None
    except Exception as exc:  # one line, never a traceback
        click.echo(f"opsctl eval: internal error: {type(exc).__name__}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(evaluation.render_json(report) if as_json else evaluation.render_text(report))
    raise click.exceptions.Exit(report.exit_code)


# --- runtime (owner: upgrade) -----------------------------------------------------------------


@cli.group("runtime")
def runtime_group() -> None:
    """Side-by-side runtimes: list, validated upgrade, rollback, prune.

    \b
    upgrade/rollback exit codes:
      0 done or nothing to do
      1 refused at validation (nothing switched, service untouched)
      2 usage or installation problem (not root, no such runtime, busy)
      3 failed after the switch; switched back, service healthy on the old runtime
      4 failed after the switch and switching back failed too: service down
    """


def _runtime_layout(root: str | None):
    from pathlib import Path

    from ops.layout import DEFAULT, Layout

    return Layout(Path(root)) if root else DEFAULT


def _runtime_fail(code: int, message: str, as_json: bool = False) -> None:
    if as_json:
        _runtime_json(code, False, message)
    click.echo(f"opsctl runtime: {message}", err=True)
    raise SystemExit(code)


def _runtime_json(code: int, changed: bool, message: str) -> None:
    """--json: the outcome as one object on stdout (the fleet's upgrade reads `changed` from it)."""
    import json

    from ops import runtime as rt

    layout = _runtime_layout(None)
    names = {link: getattr(rt.link_target(path), "name", None)
             for link, path in (("current", layout.current), ("previous", layout.previous))}
    click.echo(json.dumps({"exit_code": code, "changed": changed, "message": message, **names}))


_root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                            help="A staged layout (install.sh --root DIR) instead of /.")


@runtime_group.command("list")
@_root_option
def runtime_list(root: str | None) -> None:
    """Built runtimes, newest first, marking current and previous."""
    from ops import runtime as rt

    layout = _runtime_layout(root)
    found = rt.list_runtimes(layout)
    if not found:
        click.echo(f"no runtimes under {layout.runtimes} (install.sh builds them)", err=True)
    for r in found:
        role = rt.role(layout, r.path) or ("refused" if r.refusal else "-")
        refused = f"\n         refused at validation {r.refusal}" if role == "refused" else ""
        click.echo(f"{role:8} {r.name}  profile={r.profile} optillm={r.optillm_version} "
                   f"lock={r.lock_sha256[:12]}{refused}")


_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Also print the outcome as one JSON object on stdout (exit_code, changed, message, "
                                 "current, previous).")


def _run_switch(action, as_json: bool) -> None:
    import os

    from ops import runtime as rt
    from ops import upgrade as up

    layout = _runtime_layout(None)
    if os.geteuid() != 0:
        _runtime_fail(up.EXIT_USAGE, f"must run as root (it switches {DEFAULT.current} and restarts the service): "
                                     "sudo opsctl runtime ...", as_json)
    if not layout.unit_file.exists():
        _runtime_fail(up.EXIT_USAGE, f"{layout.unit_file} not found: run install.sh first", as_json)
    try:
        lock = up.exclusive(layout)
    except (up.Busy, OSError) as exc:
        _runtime_fail(up.EXIT_USAGE, str(exc), as_json)
    try:
        outcome = action(layout, up.Upgrader(layout))
    except rt.RuntimeProblem as exc:
        _runtime_fail(up.EXIT_USAGE, str(exc), as_json)
    except Exception as exc:  # before any switch (after one, the upgrader switches back itself)
        _runtime_fail(up.EXIT_USAGE, f"internal error: {type(exc).__name__}: {exc} "
                                     "(check: opsctl runtime list; opsctl health)", as_json)
    finally:
        lock.close()
    if as_json:
        _runtime_json(outcome.code, outcome.changed, outcome.message)
    if outcome.code == up.EXIT_OK:
        click.echo(outcome.message, err=as_json)
    else:
        _runtime_fail(outcome.code, outcome.message)


@runtime_group.command("upgrade")
@click.argument("runtime_dir")
@click.option("--no-prune", is_flag=True, help="Keep every older runtime.")
@_json_option
def runtime_upgrade(runtime_dir: str, no_prune: bool, as_json: bool) -> None:
    """Validate RUNTIME_DIR (a built runtime) on a spare port, switch to it, check, or switch back."""
    from ops import runtime as rt

    def action(layout, upgrader):
        return upgrader.upgrade(rt.resolve_runtime(layout, runtime_dir), prune=not no_prune)

    _run_switch(action, as_json)


@runtime_group.command("check")
@click.argument("runtime_dir", required=False)
def runtime_check(runtime_dir: str | None) -> None:
    """Would the service start with the configuration on disk? Exit 0 yes, 1 no (the launcher's
    one-line refusal), 2 usage or installation problem.

    Runs the launcher with --check in a transient unit with the installed unit's settings
    (user, sandbox, env file, credentials); RUNTIME_DIR defaults to the current runtime.
    """
    import os

    from ops import config_check
    from ops import runtime as rt
    from ops.transient_unit import UnitProblem
    from ops.upgrade import System

    layout = _runtime_layout(None)
    if os.geteuid() != 0:
        _runtime_fail(2, "must run as root (it starts a transient systemd unit): sudo opsctl runtime check")
    if not layout.unit_file.exists():
        _runtime_fail(2, f"{layout.unit_file} not found: run install.sh first")
    try:
        runtime = rt.resolve_runtime(layout, runtime_dir) if runtime_dir else layout.current.resolve()
        result = config_check.check(layout, runtime, System().run)
    except (rt.RuntimeProblem, UnitProblem) as exc:
        _runtime_fail(2, str(exc))
    if not result.accepted:
        _runtime_fail(1, result.line)
    click.echo(result.line)


@runtime_group.command("rollback")
@_json_option
def runtime_rollback(as_json: bool) -> None:
    """Swap current and previous, in one restart; switch back if the previous one is not healthy."""
    _run_switch(lambda layout, upgrader: upgrader.rollback(), as_json)


from ops.layout import KEEP_RUNTIMES  # noqa: E402 - the number --help shows, not its name


@runtime_group.command("prune")
@click.option("--keep", type=click.IntRange(0), default=KEEP_RUNTIMES, show_default=True,
              help="Runtimes to keep besides current.")
@_root_option
def runtime_prune(keep: int, root: str | None) -> None:
    """Remove old runtimes; never current or previous."""
    from ops import runtime as rt

    removed = rt.prune(_runtime_layout(root), keep)
    click.echo("\n".join(f"removed {p}" for p in removed) or "nothing to prune")


# --- key (owner: keys) -------------------------------------------------------------------------


@cli.group("key", help=f"The proxy key LiteLLM presents ({DEFAULT.key_file}).")
def key_group() -> None:
    pass


@key_group.command("rotate")
def key_rotate() -> None:
    """New proxy key, checked by the launcher, one restart; then the old key must get 401.

    \b
    Exit codes: 0 rotated; 1 refused or failed (before the restart the old key is put back and
    the service left alone); 2 usage (not root, not installed).
    The key is never printed: LiteLLM gets it from the file (the message says how).
    """
    import os

    from ops import config_check, keys
    from ops.upgrade import System

    layout = _runtime_layout(None)
    if os.geteuid() != 0:
        _key_fail(keys.EXIT_USAGE, "must run as root (it writes the root-only key file and restarts the service): "
                                   "sudo opsctl key rotate")
    if not layout.unit_file.exists() or not layout.key_file.exists():
        _key_fail(keys.EXIT_USAGE, f"{layout.unit_file} or {layout.key_file} not found: run install.sh first")
    system = System(layout=layout)
    try:
        result = keys.rotate(layout, system,
                             lambda: config_check.check(layout, layout.current.resolve(), system.run))
    except keys.RotationFailed as exc:
        _key_fail(keys.EXIT_FAILED, str(exc))
    except Exception as exc:  # one line, never a traceback
        _key_fail(keys.EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc} (check: ls -l {layout.conf_dir})")
    click.echo(result.message)


def _key_fail(code: int, message: str) -> None:
    click.echo(f"opsctl key: {message}", err=True)
    raise SystemExit(code)


# --- fake-upstream ----------------------------------------------------------------------------


@cli.command("fake-upstream")
@click.option("--host", default=LISTEN_HOST, show_default=True)
@click.option("--port", default=UPSTREAM_PORT, show_default=True, type=int)
def fake_upstream(host: str, port: int) -> None:
    """Run a recording OpenAI-compatible upstream (for demos and tests; GET /_calls lists calls)."""
    from ops.fake_upstream import serve

    click.echo(f"fake upstream on http://{host}:{port}/v1 (GET /_calls, POST /_reset)", err=True)
    serve(host, port)
