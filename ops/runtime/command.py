"""`opsctl runtime ...` and `opsctl key rotate`: the runtime package's click commands."""

from __future__ import annotations

import click

from ops.errors import Fail, exits, require_root
from ops.from_launcher.layout import DEFAULT, KEEP_RUNTIMES
from ops.runtime.keys import EXIT_FAILED, EXIT_USAGE as KEY_EXIT_USAGE
from ops.runtime.upgrade import EXIT_OK, EXIT_USAGE

_CHECK_HINT = "(check: opsctl runtime list; opsctl health)"


@click.group("runtime")
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


def _layout(root: str | None):
    from pathlib import Path

    from ops.from_launcher import layout  # looked up per call: tests stage a layout in its place

    return layout.Layout(Path(root)) if root else layout.DEFAULT


def _installed(layout, code: int = EXIT_USAGE) -> None:
    if not layout.unit_file.exists():
        raise Fail(code, f"{layout.unit_file} not found: run install.sh first")


def _say_json(code: int, changed: bool, message: str) -> None:
    """--json: the outcome as one object on stdout (the fleet's upgrade reads `changed` from it)."""
    import json

    from ops.runtime import runtimes as rt

    layout = _layout(None)
    names = {link: getattr(rt.link_target(path), "name", None)
             for link, path in (("current", layout.current), ("previous", layout.previous))}
    click.echo(json.dumps({"exit_code": code, "changed": changed, "message": message, **names}))


def _json_failure(code: int, text: str, exc: BaseException, kwargs: dict) -> None:
    if kwargs.get("as_json"):
        _say_json(code, getattr(exc, "details", {}).get("changed", False), text)


_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Also print the outcome as one JSON object on stdout (exit_code, changed, message, "
                                 "current, previous).")

_root_option = click.option("--root", type=click.Path(file_okay=False), default=None,
                            help="A staged layout (install.sh --root DIR) instead of /.")


@runtime_group.command("list")
@_root_option
@exits("runtime", internal=EXIT_USAGE, hint=_CHECK_HINT)
def runtime_list(root: str | None) -> None:
    """Built runtimes, newest first, marking current and previous."""
    from ops.runtime import runtimes as rt

    layout = _layout(root)
    found = rt.list_runtimes(layout)
    if not found:
        click.echo(f"no runtimes under {layout.runtimes} (install.sh builds them)", err=True)
    for r in found:
        role = rt.role(layout, r.path) or ("refused" if r.refusal else "-")
        refused = f"\n         refused at validation {r.refusal}" if role == "refused" else ""
        click.echo(f"{role:8} {r.name}  profile={r.profile} optillm={r.optillm_version} "
                   f"lock={r.lock_sha256[:12]}{refused}")


def _run_switch(action, as_json: bool) -> None:
    """Root, installed, the upgrade lock; then `action(layout, upgrader)` and its outcome's code."""
    from ops.runtime import runtimes as rt
    from ops.runtime import upgrade as up

    layout = _layout(None)
    require_root(f"it switches {DEFAULT.current} and restarts the service", "runtime ...", EXIT_USAGE)
    _installed(layout)
    try:
        lock = up.exclusive(layout)
    except (up.Busy, OSError) as exc:
        raise Fail(EXIT_USAGE, str(exc)) from None
    try:
        outcome = action(layout, up.Upgrader(layout))
    except rt.RuntimeProblem as exc:
        raise Fail(EXIT_USAGE, str(exc)) from None
    finally:
        lock.close()
    if outcome.code != EXIT_OK:
        raise Fail(outcome.code, outcome.message, changed=outcome.changed)
    if as_json:
        _say_json(outcome.code, outcome.changed, outcome.message)
    click.echo(outcome.message, err=as_json)


@runtime_group.command("upgrade")
@click.argument("runtime_dir")
@click.option("--no-prune", is_flag=True, help="Keep every older runtime.")
@_json_option
@exits("runtime", internal=EXIT_USAGE, hint=_CHECK_HINT, also=_json_failure)
def runtime_upgrade(runtime_dir: str, no_prune: bool, as_json: bool) -> None:
    """Validate RUNTIME_DIR (a built runtime) on a spare port, switch to it, check, or switch back."""
    from ops.runtime import runtimes as rt

    def action(layout, upgrader):
        return upgrader.upgrade(rt.resolve_runtime(layout, runtime_dir), prune=not no_prune)

    _run_switch(action, as_json)


@runtime_group.command("check")
@click.argument("runtime_dir", required=False)
@exits("runtime", internal=EXIT_USAGE, hint=_CHECK_HINT)
def runtime_check(runtime_dir: str | None) -> None:
    """Would the service start with the configuration on disk? Exit 0 yes, 1 no (the launcher's
    one-line refusal), 2 usage or installation problem.

    Runs the launcher with --check in a transient unit with the installed unit's settings
    (user, sandbox, env file, credentials); RUNTIME_DIR defaults to the current runtime.
    """
    from ops.runtime import config_check
    from ops.runtime import runtimes as rt
    from ops.runtime.transient_unit import UnitProblem
    from ops.runtime.upgrade import System

    layout = _layout(None)
    require_root("it starts a transient systemd unit", "runtime check", EXIT_USAGE)
    _installed(layout)
    try:
        runtime = rt.resolve_runtime(layout, runtime_dir) if runtime_dir else layout.current.resolve()
        result = config_check.check(layout, runtime, System().run)
    except (rt.RuntimeProblem, UnitProblem) as exc:
        raise Fail(EXIT_USAGE, str(exc)) from None
    if not result.accepted:
        raise Fail(1, result.line)
    click.echo(result.line)


@runtime_group.command("rollback")
@_json_option
@exits("runtime", internal=EXIT_USAGE, hint=_CHECK_HINT, also=_json_failure)
def runtime_rollback(as_json: bool) -> None:
    """Swap current and previous, in one restart; switch back if the previous one is not healthy."""
    _run_switch(lambda layout, upgrader: upgrader.rollback(), as_json)


@runtime_group.command("prune")
@click.option("--keep", type=click.IntRange(0), default=KEEP_RUNTIMES, show_default=True,
              help="Runtimes to keep besides current.")
@_root_option
@exits("runtime", internal=EXIT_USAGE, hint=_CHECK_HINT)
def runtime_prune(keep: int, root: str | None) -> None:
    """Remove old runtimes; never current or previous."""
    from ops.runtime import runtimes as rt

    removed = rt.prune(_layout(root), keep)
    click.echo("\n".join(f"removed {p}" for p in removed) or "nothing to prune")


@click.group("key", help=f"The proxy key LiteLLM presents ({DEFAULT.key_file}).")
def key_group() -> None:
    pass


@key_group.command("rotate")
@exits("key", internal=EXIT_FAILED, hint=f"(check: ls -l {DEFAULT.conf_dir})")
def key_rotate() -> None:
    """New proxy key, checked by the launcher, applied by one reload (a restart if the service is
    not running); then the old key must get 401.

    \b
    Exit codes: 0 rotated; 1 refused or failed (before it is applied the old key is put back and
    the service left alone); 2 usage (not root, not installed).
    The key is never printed: LiteLLM gets it from the file (the message says how).
    """
    from ops.runtime import config_check, keys
    from ops.runtime.upgrade import System

    layout = _layout(None)
    require_root("it writes the root-only key file and reloads the service", "key rotate", KEY_EXIT_USAGE)
    if not layout.unit_file.exists() or not layout.key_file.exists():
        raise Fail(KEY_EXIT_USAGE, f"{layout.unit_file} or {layout.key_file} not found: run install.sh first")
    system = System(layout=layout)
    try:
        result = keys.rotate(layout, system,
                             lambda: config_check.check(layout, layout.current.resolve(), system.run))
    except keys.RotationFailed as exc:
        raise Fail(EXIT_FAILED, str(exc)) from None
    click.echo(result.message)


COMMANDS = (runtime_group, key_group)
