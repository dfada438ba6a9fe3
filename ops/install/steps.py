"""The install steps in the order they run (RUNBOOK.md, "Messages: install.sh"). Each step compares
what it wants with what the host holds (ops.install.host) and applies only the difference through
`Run.apply`, so a dry run prints the same plan and writes nothing. Paths come from Layout; the
toolkit's files (locks, launcher/, systemd/, etc/) from the checkout install.sh runs from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ops.from_launcher.layout import BASE_MODEL, FACTS, OPTILLM_VERSION, PROFILES, SERVICE_USER, UPSTREAM_URL
from ops.install import host, options
from ops.install.files import put_file, sha256_of, staged_path, sync_file, tighten_mode
from ops.install.run import Run, StepFailed, sh
from ops.install.templates import render

SYSTEM_PYTHON = options.SYSTEM_PYTHON
# The service user's home has a root-owned .optillm/ for the provider file: without it, 0.3.12's
# proxy plugin loads a packaged example that routes to public clouds. .optillm/logs is the mount
# point for the unit's BindPaths= (the mcp plugin writes there); StateDirectory= makes the rest.
# These are made with a plain mkdir: systemd-tmpfiles refuses a root-owned path below a
# user-owned one. The others: systemd/tmpfiles.conf.in.
HOME_DIRECTORIES = ((f"{FACTS['STATE_DIR']}/.optillm", 0o755, "root"),
                    (f"{FACTS['STATE_DIR']}/.optillm/logs", 0o755, "root"))
ENV_KEY_LINE = re.compile(rb"^[ \t\r\f\v]*OPENAI_API_KEY=", re.MULTILINE)


# --- profile, system, python ------------------------------------------------------------------


def choose_profile(run: Run) -> None:
    """A re-run without --profile keeps the profile the host runs, so re-running the same command on
    a full host changes nothing instead of asking for an upgrade to lean. For an upgrade without
    --profile, a lock named <profile>.txt names its profile; any other lock keeps the box's."""
    run.step("profile", "give it explicitly: --profile lean|full")
    opts = run.opts
    run.profile = opts.profile
    if opts.profile_given:
        return
    named = Path(opts.upgrade_lock or "none").name.removesuffix(".txt")
    if opts.upgrade and named in PROFILES:
        run.profile = named
        return
    recorded = host.recorded_profile(run.layout)
    if recorded in PROFILES:
        run.profile = recorded
    elif opts.upgrade:
        raise StepFailed(f"cannot read the current profile from {FACTS['CURRENT_LINK']}/{FACTS['MANIFEST_REL']}: "
                         "give --profile lean|full", options.EXIT_USAGE)


def check_system(run: Run) -> None:
    run.step("check system", "run as root (sudo ./install.sh), or stage with --root DIR")
    run.has_systemd = not run.root and host.has_systemd()
    where = f"staging under {run.root} (no user, chown, apt or systemctl)" if run.root else "this host"
    if run.dry_run:
        where += "; dry run: nothing is written"
    run.report(f"profile {run.profile}, {where}")


def system_python_version() -> str:
    return subprocess.run([SYSTEM_PYTHON, "-I", "-c", 'import sys; print("%d.%d" % sys.version_info[:2])'],
                          check=True, capture_output=True, text=True).stdout.strip()


def check_python(run: Run) -> None:
    """The lock from the host's python3 (locks/py<X.Y>/<profile>.txt), or --upgrade's LOCK. Where a
    profile cannot be built for that Python, locks/py<X.Y>/<profile>.unavailable says why."""
    pythons = options.supported_pythons(run.repo)
    run.step("check python", f"install a supported Python ({pythons}) as {SYSTEM_PYTHON}: Debian 12 and 13 ship one")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise StepFailed(f"{SYSTEM_PYTHON} is missing: install python3 ({pythons})", options.EXIT_PREREQ)
    version = system_python_version()
    locks = run.repo / "locks" / f"py{version}"
    upgrade_lock = run.opts.upgrade_lock
    if not upgrade_lock and not locks.is_dir():
        raise StepFailed(f"{SYSTEM_PYTHON} is Python {version}; locks exist for Python {pythons} (locks/py<X.Y>/): "
                         "use Debian 12 (3.11), Debian 13 (3.13) or another system whose python3 is one of them",
                         options.EXIT_PREREQ)
    unavailable = locks / f"{run.profile}.unavailable"
    if not upgrade_lock and not (locks / f"{run.profile}.txt").is_file() and unavailable.is_file():
        why = unavailable.read_text(encoding="utf-8").splitlines()[:1]
        raise StepFailed(f"no {run.profile} profile for Python {version}: {''.join(why)}", options.EXIT_PREREQ)
    lock = Path(upgrade_lock) if upgrade_lock else locks / f"{run.profile}.txt"
    run.lock_file = lock
    run.lock_shown = str(lock).removeprefix(f"{run.repo}/")  # the lock actually used, as the operator named it
    if not lock.is_file():
        if run.profile == "lean":
            raise StepFailed(f"no lean lock ({lock}) in this checkout: install the stock runtime with --profile full, "
                             "or update the checkout", options.EXIT_PREREQ)
        raise StepFailed(f"lock file {lock} is missing from this checkout", options.EXIT_PREREQ)
    run.lock_sha = sha256_of(lock)
    run.runtime_name = f"{OPTILLM_VERSION}-{run.profile}-{run.lock_sha[:12]}"
    run.report(f"{SYSTEM_PYTHON} is Python {version}: {run.lock_shown}, runtime {run.runtime_name}")


def keep_current_runtime(run: Run) -> None:
    """On a running installation another profile is an upgrade (validated, reversible): refused here,
    in a dry run too, so that it predicts the real run. A plain re-run keeps whatever runtime is
    current, also one an --upgrade switched to from another lock, and applies everything else."""
    run.step("runtime choice", f"upgrade deliberately: sudo ./install.sh --upgrade [--profile {run.profile}]")
    current = run.layout.current
    if run.root or not run.has_systemd or not current.is_symlink():
        return
    installed = os.readlink(current).rsplit("/", 1)[-1]
    if installed == run.runtime_name:
        return
    keep = host.recorded_profile(run.layout)
    if keep and keep != run.profile:
        raise StepFailed(f"this box runs the {keep} profile ({installed}); --profile {run.profile} is a switch, which "
                         "a plain run never makes. To switch (validated, reversible): sudo ./install.sh --upgrade "
                         f"--profile {run.profile}; to keep {keep}: leave --profile out")
    run.notes.append(f"kept the current runtime {installed}; {run.lock_shown} would give {run.runtime_name}: "
                     "switch deliberately with sudo ./install.sh --upgrade")
    run.runtime_name = installed
    run.kept_runtime = True
    run.report(f"keeping the current runtime {installed} ({run.lock_shown} differs: --upgrade switches)")


# --- user and directories: systemd-sysusers and systemd-tmpfiles --------------------------------


def create_service_user(run: Run) -> None:
    """The user from systemd-sysusers with systemd/sysusers.conf.in rendered (re-applied at boot)."""
    sysusers = FACTS["SYSUSERS_FILE"]
    run.step("service user", f"check {sysusers}, then: systemd-sysusers {sysusers}")
    sync_file(run, render(run.repo / "systemd" / "sysusers.conf.in", run.root).encode(), sysusers, 0o644, sysusers)
    if run.root:
        run.report(f"skipped under --root (would create system user {SERVICE_USER})")
    elif host.user_exists(SERVICE_USER):
        run.report(f"{SERVICE_USER} exists")
    else:
        run.apply(f"create system user {SERVICE_USER}", f"created system user {SERVICE_USER}",
                  lambda: sh("systemd-sysusers", sysusers))


def directories(tmpfiles_conf: str) -> list[tuple[str, int, str]]:
    """(path, mode, owner): the `d` lines of the tmpfiles.d text, then HOME_DIRECTORIES."""
    found = []
    for line in tmpfiles_conf.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "d":
            found.append((fields[1], int(fields[2], 8), fields[3]))
    return found + list(HOME_DIRECTORIES)


def create_directories(run: Run) -> None:
    tmpfiles = FACTS["TMPFILES_FILE"]
    run.step("directories", f"check {tmpfiles} and the paths it names, then: systemd-tmpfiles --create {tmpfiles}")
    conf = render(run.repo / "systemd" / "tmpfiles.conf.in", run.root)
    sync_file(run, conf.encode(), tmpfiles, 0o644, tmpfiles)
    wanted = directories(conf)
    differ = [d for d, mode, owner in wanted if host.dir_differs(staged_path(run, d), mode, owner, bool(run.root))]
    if differ:
        shown = " ".join(differ)
        run.apply(f"make {shown}", f"made {shown}", lambda: make_directories(run, wanted))
    else:
        run.report("unchanged")


def make_directories(run: Run, wanted: list[tuple[str, int, str]]) -> None:
    """systemd-tmpfiles, then the home directories; staged under --root, a mkdir for each (no owner)."""
    if not run.root:
        sh("systemd-tmpfiles", "--create", FACTS["TMPFILES_FILE"])
    for path, mode, owner in (HOME_DIRECTORIES if not run.root else wanted):
        dest = staged_path(run, path)
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, mode)
        if not run.root:
            shutil.chown(dest, owner, owner)


# --- the service's configuration ------------------------------------------------------------------


def write_provider_file(run: Run) -> None:
    """In the service user's home (HOME_DIRECTORIES); written only if absent."""
    shown = FACTS["PROVIDER_FILE"]
    run.step("provider file", f"check {shown} by hand, then re-run")
    dest = run.layout.provider_file
    if dest.exists():
        if f"base_url: {UPSTREAM_URL}" not in dest.read_text(encoding="utf-8", errors="replace"):
            run.notes.append(f"{shown} exists and does not point at {UPSTREAM_URL}: left as is (yours)")
        run.report(f"{shown} exists")
        return
    content = render(run.repo / "etc" / "optillm-proxy" / "proxy_config.yaml.in", run.root).encode()
    run.apply(f"write {shown} (LiteLLM on loopback only)", f"wrote {shown}", lambda: put_file(run, content, dest, 0o644))


def write_env_file(run: Run) -> None:
    shown = FACTS["ENV_FILE"]
    run.step("env file", f"check {FACTS['CONF_DIR']} by hand (it must be a directory), then re-run")
    dest = run.layout.env_file
    if dest.exists():
        tighten_mode(run, dest, shown)
        run.report(f"{shown} exists: kept as is")
    else:
        content = (run.repo / "etc" / "optillm-proxy" / "env.example").read_bytes()
        run.apply(f"write {shown} from etc/optillm-proxy/env.example", "wrote {} from env.example".format(shown),
                  lambda: put_file(run, content, dest, 0o600))


def write_upstream_key_file(run: Run) -> None:
    """The LiteLLM key is a credential of its own (LoadCredential=upstream-key), never in the env
    file. An env file that still holds OPENAI_API_KEY= is migrated by ops.runtime.keys: the value
    goes into the key file and each such line becomes a comment (never argv, env or output)."""
    from ops.runtime import keys

    shown, env_shown = FACTS["UPSTREAM_KEY_FILE"], FACTS["ENV_FILE"]
    run.step("upstream key", f"check {shown} and the OPENAI_API_KEY lines of {env_shown} by hand, then re-run")
    dest, env = run.layout.upstream_key_file, run.layout.env_file
    if dest.exists():
        tighten_mode(run, dest, shown)
    env_has_key = env.is_file() and ENV_KEY_LINE.search(env.read_bytes()) is not None
    if run.dry_run:
        if env_has_key:
            run.apply(f"move OPENAI_API_KEY from {env_shown} into {shown}", "", lambda: None)
        elif not dest.is_file() or dest.stat().st_size == 0:
            run.report(f"would need {shown}: the service is not started without it")
        return
    outcome = keys.migrate_upstream_key(env, dest, shown) if env_has_key else ""
    if outcome == "moved":
        run.changes.append(f"moved OPENAI_API_KEY from {env_shown} into {shown} (the env file holds no secret now)")
    elif outcome == "dropped":
        run.changes.append(f"removed the OPENAI_API_KEY lines from {env_shown} ({shown} is the key)")
    elif outcome == "conflict":
        run.notes.append(f"{env_shown} has an OPENAI_API_KEY different from {shown}: keep the right key in {shown} and "
                         "delete the line (the launcher refuses to start while it is there)")
    if not dest.exists():
        # Empty and 0600 already, so that `sudoedit` fills a file nobody else could ever read.
        keys.write_exclusive(dest, "")
        run.changes.append(f"created {shown} (empty, mode 0600) for the LiteLLM key")
    if run.real:
        os.chown(dest, 0, 0)
    if dest.stat().st_size > 0:
        run.report(f"{shown} (mode 0600)" + (f": {outcome} from {env_shown}" if outcome else ""))
    else:
        run.upstream_key_missing = True
        run.notes.append(f"no LiteLLM key: write it into {shown} (sudoedit {shown}; one line: a LiteLLM virtual key "
                         f"limited to {BASE_MODEL}), then re-run install.sh")
        run.report(f"{shown} is missing or empty: the service will not be started")


def write_key_file(run: Run) -> None:
    from ops.runtime import keys

    shown = FACTS["KEY_FILE"]
    run.step("key file", f"check {shown} by hand (remove a broken one to regenerate), then re-run")
    dest = run.layout.key_file
    if not dest.exists():
        def generate() -> None:
            keys.write_exclusive(dest, keys.new_key() + "\n")
            if run.real:
                os.chown(dest, 0, 0)

        run.apply(f"generate the proxy key into {shown}", f"generated the proxy key into {shown}", generate)
        return
    tighten_mode(run, dest, shown)
    with open(dest, "rb") as key:
        if key.read(3) == b"sk-":
            run.notes.append(f"{shown} starts with 'sk-': optillm {OPTILLM_VERSION} forwards such bearers upstream; "
                             "replace it (delete it and re-run to generate one)")
    run.report(f"{shown} exists: kept as is")


def install_unit(run: Run) -> None:
    """The service and its socket, from systemd/ in the checkout."""
    service = FACTS["SERVICE"]
    run.step("unit", f"check systemd/{service}.service and .socket in the repo (systemd-analyze verify), then re-run")
    for deployed in (FACTS["UNIT_FILE"], FACTS["SOCKET_FILE"]):
        name = Path(deployed).name
        src = run.repo / "systemd" / name
        if src.is_file():
            sync_file(run, src.read_bytes(), deployed, 0o644, deployed)
        elif run.real:
            raise StepFailed(f"systemd/{name} is missing from this checkout: update the checkout", options.EXIT_PREREQ)
        else:
            print(f"install.sh: warning: systemd/{name} is missing from this checkout: not staged", file=sys.stderr)
            run.notes.append(f"systemd/{name} was missing: not installed")


def write_uninstall_script(run: Run) -> None:
    """The standalone uninstall script (k3s style), uninstall.sh.in with this install's values.
    Derived like bytecode from source: kept current, not listed as a change."""
    shown = FACTS["UNINSTALL_SCRIPT"]
    run.step("uninstall script", f"check {FACTS['PREFIX_DIR']} by hand, then re-run")
    content = render(run.repo / "uninstall.sh.in", run.root).encode()
    dest = run.layout.uninstall_script
    if host.file_differs(content, dest, 0o755, bool(run.root)):
        if not run.dry_run:
            put_file(run, content, dest, 0o755)
        run.report(f"{'would write ' if run.dry_run else ''}{shown}")
    else:
        run.report("unchanged")


def detect_changes(run: Run) -> None:
    """What the service depends on, compared with the record of the last run (ops.runtime.install_state;
    opsctl records after its own restarts too); recorded unless a dry run."""
    from ops.runtime import install_state

    run.step("change detection", f"remove {FACTS['INSTALL_STATE_FILE']} to force a restart, then re-run")
    now = install_state.fingerprint(run.layout)
    run.restart_reasons = install_state.changes(install_state.recorded(run.layout), now)
    if run.dry_run:
        if run.changes:
            run.restart_reasons.append("files this run would write")
        if run.restart_reasons:
            run.report(f"dry run: a restart would follow (changed: {' '.join(run.restart_reasons)})")
        else:
            run.report("dry run: nothing changed, no restart would follow")
        return
    install_state.record(run.layout, now)
    if run.restart_reasons:
        run.report(f"changed since the last install: {' '.join(run.restart_reasons)}")
    else:
        run.report("nothing the service depends on changed")

