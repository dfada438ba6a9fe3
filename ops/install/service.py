"""The service step: the launcher's configuration check before anything is restarted, and the one
reload or restart (`restart`), which the rest of the run calls nowhere else."""

from __future__ import annotations

import subprocess

from ops.from_launcher.layout import BASE_MODEL, FACTS, LISTEN_HOST, LISTEN_PORT, SERVICE, SOCKET_UNIT, Layout
from ops.install.run import Run, sh
from ops.runtime.install_state import FIRST_INSTALL, UNIT_COMPONENTS
from ops.runtime.service import reloadable


def systemctl(*args: str, check: bool = False, quiet: bool = False) -> bool:
    """True when systemctl exits 0."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(["systemctl", *args], check=check, stdout=out, stderr=out).returncode == 0


def is_active(unit: str) -> bool:
    return systemctl("is-active", "--quiet", unit)


def service_is(run: Run, health: str, state: str) -> None:
    """HEALTH for --json (staged, dry-run, not-started, running: not restarted, healthy or unhealthy:
    (re)started by this run, refused: kept on the previous configuration)."""
    run.health, run.service_state = health, state


def start_service(run: Run) -> None:
    run.step("service", f"see: journalctl -u {SERVICE} -n 50 --no-pager; systemctl status {SERVICE}")
    reasons = " ".join(run.restart_reasons)
    if run.root:
        service_is(run, "staged", f"staged under {run.root}: not started (--root never runs systemctl)")
        run.report("skipped under --root")
        return
    if run.dry_run:
        if run.restart_reasons:
            how = "reload" if reloadable(run.restart_reasons) else "restart"
            service_is(run, "dry-run", f"dry run: would check the configuration (opsctl runtime check) and {how} "
                                       f"{SERVICE} (changed: {reasons})")
        else:
            service_is(run, "dry-run", f"dry run: would not restart {SERVICE} (nothing changed)")
        run.report(run.service_state.removeprefix("dry run: "))
        return
    if not run.has_systemd:
        service_is(run, "not-started", "NOT STARTED: systemd is not PID 1 here (container or CI?); on a systemd host "
                                       f"run: systemctl daemon-reload && systemctl enable --now {SERVICE}")
        run.report(f"systemd is not running here: installed, but could not start {SERVICE}")
        return
    if set(run.restart_reasons) & {*UNIT_COMPONENTS, FIRST_INSTALL}:
        sh("systemctl", "daemon-reload")
    if not (systemctl("is-enabled", "--quiet", SERVICE, quiet=True)
            and systemctl("is-enabled", "--quiet", SOCKET_UNIT, quiet=True)):
        run.apply(f"enable {SOCKET_UNIT} and {SERVICE} at boot", f"enabled {SOCKET_UNIT} and {SERVICE} at boot",
                  lambda: sh("systemctl", "enable", "--quiet", SOCKET_UNIT, SERVICE))
    key = FACTS["UPSTREAM_KEY_FILE"]
    if run.upstream_key_missing:
        service_is(run, "not-started", f"NOT STARTED: no LiteLLM key in {key}; write it (sudoedit {key}; one line: a "
                                       f"LiteLLM virtual key limited to {BASE_MODEL}), then re-run install.sh")
        run.report(f"not started: {key} is missing or empty")
        return
    if run.opts.skip_start:
        pending = f"; pending changes: {reasons}" if reasons else ""
        service_is(run, "not-started", f"not (re)started (--no-start){pending}")
        run.report("skipped (--no-start)")
        return
    if run.restart_reasons:
        action = f"restarted (changed: {reasons})"
    elif not is_active(SERVICE):
        action = "started (it was not running)"
    else:
        service_is(run, "running", "running, not restarted (nothing changed)")
        run.report("nothing changed: not restarted")
        return
    if not configuration_accepted(run):
        return
    verb = action.split(" ", 1)[0]
    expected = "reload" if reloadable(run.restart_reasons) else verb.removesuffix("ed")
    run.report(f"{expected} {SERVICE}; systemctl returns once it reports ready (or fails)")
    applied, done = restart(run.layout, run.restart_reasons)
    run.changes += done
    if applied.detail:
        run.report(applied.detail)
    if applied.action == "reloaded":
        action, verb = f"reloaded (changed: {reasons})", "reload"
        run.reloaded = applied.code == 0  # --json: applied by a reload; a refused one applied nothing
    if applied.code == 0:
        service_is(run, "healthy", f"{action}; healthy at http://{LISTEN_HOST}:{LISTEN_PORT}/health")
        run.changes.append(f"{SERVICE} {action}")
    elif applied.action == "reloaded":
        run.changes.append(f"tried to reload {SERVICE}: refused")
        service_is(run, "refused", "NOT RELOADED: the running launcher refused the new configuration and keeps serving "
                                   f"the previous one: {applied.detail} (fix it, check with: sudo opsctl lint, then "
                                   "re-run install.sh)")
    else:
        run.changes.append(f"tried to {verb} {SERVICE}: it failed")
        service_is(run, "unhealthy", f"{verb}, but FAILED TO START (NOT HEALTHY): journalctl -u {SERVICE} -n 50 --no-pager")
        run.report(f"{SERVICE} failed to start")


def configuration_accepted(run: Run) -> bool:
    """The launcher's own checks (`opsctl runtime check`: --check in a transient unit with the
    installed unit's settings) on the configuration now on disk, before the running service is
    touched: a refusal leaves it serving the previous configuration."""
    opsctl = run.layout.opsctl
    proc = subprocess.run([str(opsctl), "runtime", "check"], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        run.report("configuration accepted by the launcher's checks")
        return True
    lines = (proc.stdout + proc.stderr).rstrip("\n").split("\n")
    service_is(run, "refused", "NOT RESTARTED: the launcher would refuse the new configuration, so the service keeps "
                               f"running the previous one: {lines[-1]} (fix it, check with: sudo opsctl lint, then re-run "
                               "install.sh)")
    run.report(f"refused: {lines[-1]}")
    return False


def restart(layout: Layout, reasons: list[str]):
    """The one reload or (re)start of the service for REASONS (the components that changed): returns
    what ops.runtime.service.apply_change did (it decides: a reload when every change is one a new
    launcher applies and the service runs; else a restart, which returns once the launcher's READY=1
    says it serves, or fails) and what this did besides. Either way requests in flight finish and
    new connections never see a refusal."""
    from ops.runtime.service import apply_change  # needs opsctl's venv, which a real run has

    done: list[str] = []
    clear_start_limit(done)
    hold_socket("socket" in reasons, done)
    return apply_change(layout, list(reasons)), done


def start_limit_was_hit(unit: str) -> bool:
    """systemd keeps a unit's first failure as its Result: a crash loop that ends at the start limit
    still says exit-code, and only the journal (or the socket's Result) tells the limit was hit."""
    def show(prop: str) -> str:
        return subprocess.run(["systemctl", "show", "-p", prop, "--value", unit], capture_output=True, text=True,
                              check=False).stdout.strip()

    if show("Result").endswith("start-limit-hit"):
        return True
    if show("ActiveState") != "failed":
        return False
    journal = subprocess.run(["journalctl", "-u", unit, "-n", "20", "-o", "cat", "--no-pager"], capture_output=True,
                             text=True, check=False).stdout
    return "Start request repeated too quickly" in journal


def clear_start_limit(done: list[str]) -> None:
    """Operator restarts are not crashes: clear the start-rate counter so a busy day of changes never
    runs into StartLimitBurst (which fails the socket too). A unit that already hit it is named."""
    for unit in (SERVICE, SOCKET_UNIT):
        if start_limit_was_hit(unit):
            done.append(f"cleared {unit}'s start-limit-hit (it had been refused further starts; see journalctl -u {unit})")
    systemctl("reset-failed", SERVICE, SOCKET_UNIT, quiet=True)


def hold_socket(socket_changed: bool, done: list[str]) -> None:
    """The socket must be systemd's before the service restarts: first install, or an install whose
    service still binds the port itself (stopped once, here). Restarting the socket refuses
    connections, so it happens only when its own file changed."""
    if not is_active(SOCKET_UNIT):
        if is_active(SERVICE):
            sh("systemctl", "stop", SERVICE)
        sh("systemctl", "start", SOCKET_UNIT)
        done.append(f"started {SOCKET_UNIT} (systemd holds {LISTEN_HOST}:{LISTEN_PORT})")
    elif socket_changed:
        sh("systemctl", "restart", SOCKET_UNIT)
        done.append(f"restarted {SOCKET_UNIT} (its unit file changed: connections were refused for a moment)")
