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


def _runtime_fail(code: int, message: str) -> None:
    click.echo(f"opsctl runtime: {message}", err=True)
    raise SystemExit(code)


_root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                            help="A staged layout (install.sh --root DIR) instead of /.")


@runtime_group.command("list")
@_root_option
def runtime_list(root: str | None) -> None:
    """Built runtimes, newest first, marking current and previous."""
    from ops import runtime as rt

    layout = _runtime_layout(root)
    for r in rt.list_runtimes(layout):
        role = rt.role(layout, r.path)
        click.echo(f"{role or '-':8} {r.name}  profile={r.profile} optillm={r.optillm_version} "
                   f"lock={r.lock_sha256[:12]}")


def _run_switch(action) -> None:
    import os

    from ops import runtime as rt
    from ops import upgrade as up

    layout = _runtime_layout(None)
    if os.geteuid() != 0:
        _runtime_fail(up.EXIT_USAGE, "must run as root (it switches /opt/optillm-proxy/current and restarts the service): sudo opsctl runtime ...")
    if not layout.unit_file.exists():
        _runtime_fail(up.EXIT_USAGE, f"{layout.unit_file} not found: run install.sh first")
    try:
        lock = up.exclusive(layout)
    except (up.Busy, OSError) as exc:
        _runtime_fail(up.EXIT_USAGE, str(exc))
    try:
        outcome = action(layout, up.Upgrader(layout))
    except rt.RuntimeProblem as exc:
        _runtime_fail(up.EXIT_USAGE, str(exc))
    finally:
        lock.close()
    if outcome.code == up.EXIT_OK:
        click.echo(outcome.message)
    else:
        _runtime_fail(outcome.code, outcome.message)


@runtime_group.command("upgrade")
@click.argument("runtime_dir")
@click.option("--no-prune", is_flag=True, help="Keep every older runtime.")
def runtime_upgrade(runtime_dir: str, no_prune: bool) -> None:
    """Validate RUNTIME_DIR (a built runtime) on a spare port, switch to it, check, or switch back."""
    from ops import runtime as rt

    def action(layout, upgrader):
        return upgrader.upgrade(rt.resolve_runtime(layout, runtime_dir), prune=not no_prune)

    _run_switch(action)


@runtime_group.command("rollback")
def runtime_rollback() -> None:
    """Swap current and previous, in one restart; switch back if the previous one is not healthy."""
    _run_switch(lambda layout, upgrader: upgrader.rollback())


@runtime_group.command("prune")
@click.option("--keep", type=click.IntRange(0), default=None,
              help="Runtimes to keep besides current (default: ops.layout.KEEP_RUNTIMES).")
@_root_option
def runtime_prune(keep: int | None, root: str | None) -> None:
    """Remove old runtimes; never current or previous."""
    from ops import runtime as rt
    from ops.layout import KEEP_RUNTIMES

    removed = rt.prune(_runtime_layout(root), KEEP_RUNTIMES if keep is None else keep)
    click.echo("\n".join(f"removed {p}" for p in removed) or "nothing to prune")


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
