"""The install steps in the order they run (RUNBOOK.md, "Messages: install.sh"). Each step compares
what it wants with what the host holds (ops.install.host) and applies only the difference through
`Run.apply`, so a dry run prints the same plan and writes nothing. Paths come from Layout; the
toolkit's files (locks, launcher/, systemd/, etc/) from the checkout install.sh runs from."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ops.from_launcher.layout import BASE_MODEL, FACTS, OPTILLM_VERSION, PROFILES, SERVICE_USER, UPSTREAM_URL
from ops.install import host, options
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


def staged_path(run: Run, path: str) -> Path:
    """A deployed path, under --root when given."""
    return Path(run.root + path) if run.root else Path(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- writing files, links and directories (root-owned when installing for real) --------------


def put_file(run: Run, content: bytes, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.install-tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.chmod(tmp, mode)
    if not run.root:
        os.chown(tmp, 0, 0)
    os.replace(tmp, dest)


def sync_file(run: Run, content: bytes, deployed: str, mode: int, shown: str) -> None:
    dest = staged_path(run, deployed)
    if host.file_differs(content, dest, mode, bool(run.root)):
        run.apply(f"install {shown}", f"installed {shown}", lambda: put_file(run, content, dest, mode))
    else:
        run.report(f"{shown} unchanged")


def make_link(run: Run, target: str, link: Path) -> None:
    """LINK -> TARGET by atomic rename (relative targets keep a --root staging self-contained)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f"{link.name}.install-tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    if run.real:
        os.lchown(tmp, 0, 0)
    os.replace(tmp, link)


def build_dir(run: Run, dest: Path, builder: Callable[[Path], None]) -> None:
    """Built under a temporary name, then renamed: a half-built runtime is never what a path names."""
    tmp = dest.parent / f".{dest.name}.partial"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    builder(tmp)
    sh("chmod", "-R", "go-w", tmp)
    if run.real:
        sh("chown", "-R", "root:root", tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)


def tighten_mode(run: Run, path: Path, shown: str) -> None:
    """Secrets are never group/world readable: an operator's file keeps its content, not a loose mode."""
    if not host.is_secret_mode(path):
        run.apply(f"set the mode of {shown} to 0600", f"mode of {shown} set to 0600", lambda: os.chmod(path, 0o600))


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


# --- runtime ------------------------------------------------------------------------------------


def uv_version_wanted(repo: Path) -> str:
    match = re.search(r"^uv==([0-9.]+)", (repo / "locks" / "uv.txt").read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1) if match else ""


def find_uv(run: Run) -> str:
    """The uv install.sh bootstrapped into tools/, or the same version on PATH."""
    want = f"uv {uv_version_wanted(run.repo)}"
    for candidate in (str(run.layout.tools / "uv" / "bin" / "uv"), shutil.which("uv")):
        if candidate and os.access(candidate, os.X_OK):
            got = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False).stdout
            if got.startswith(want):
                return candidate
    raise StepFailed(f"no {want} in {FACTS['TOOLS_DIR']}/uv or on PATH: re-run install.sh, which bootstraps it")


# --system-certs: the host's trust store (a company CA in it works as for curl and apt), not the
# Mozilla roots uv bundles. install.sh's uv_cmd passes the same (a test holds them together).
UV_FLAGS = ("--no-config", "--system-certs", "-q")


def uv(run: Run, *args: str | Path) -> None:
    sh(find_uv(run), *UV_FLAGS, *args)


def build_runtime(run: Run) -> None:
    run.step("runtime", "check the uv cache/index access and disk space (full needs ~9 GB), then re-run")
    dest = run.layout.runtimes / run.runtime_name
    if run.kept_runtime:
        run.report(f"{run.runtime_name} is current and kept (built from another lock)")
    elif host.runtime_is_complete(dest, run.lock_sha):
        run.report(f"{run.runtime_name} already built (lock unchanged)")
    else:
        if not run.dry_run:
            run.report(f"building {run.runtime_name} from {run.lock_shown} (hashes required, bytecode compiled)")
        run.apply(f"build {run.runtime_name} from {run.lock_shown}", f"built runtime {run.runtime_name}",
                  lambda: build_dir(run, dest, lambda tmp: build_venv(run, tmp)))


def build_venv(run: Run, tmp: Path) -> None:
    """The venv is relocatable (uv writes relative script launchers): built under another name."""
    uv(run, "venv", "--relocatable", "--python", SYSTEM_PYTHON, tmp)
    uv(run, "pip", "sync", "--python", tmp / "bin" / "python", "--require-hashes", "--compile-bytecode", run.lock_file)
    got = subprocess.run([tmp / "bin" / "python", "-I", "-c",
                          'import importlib.metadata as m; print(m.version("optillm"))'],
                         check=True, capture_output=True, text=True).stdout.strip()
    if got != OPTILLM_VERSION:
        raise StepFailed(f"{run.lock_shown} installed optillm {got}, expected {OPTILLM_VERSION}: fix the lock")
    lock_copy = tmp / "libexec" / f"{run.profile}.txt"
    lock_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.lock_file, lock_copy)
    os.chmod(lock_copy, 0o644)
    link_site_packages(run, tmp)
    write_manifest(run, tmp)


def write_manifest(run: Run, runtime: Path) -> None:
    """The format's one reader: launcher/optillm_proxy_launcher/manifest.py."""
    python = subprocess.run([runtime / "bin" / "python", "-I", "-c", 'import sys; print("%d.%d" % sys.version_info[:2])'],
                            check=True, capture_output=True, text=True).stdout.strip()
    manifest = {"profile": run.profile, "optillm_version": OPTILLM_VERSION, "lock_sha256": run.lock_sha,
                "lock_file": f"libexec/{run.profile}.txt", "lock_source": run.lock_shown, "python": python}
    (runtime / FACTS["MANIFEST_REL"]).write_text(json.dumps(manifest) + "\n", encoding="utf-8")


def link_site_packages(run: Run, runtime: Path) -> None:
    """<runtime>/site-packages -> lib/python3.X/site-packages: the unit names paths inside the
    runtime (spl's data, BindPaths=) without naming the Python version."""
    found = host.site_packages_rel(runtime)
    link = runtime / FACTS["SITE_PACKAGES_REL"]
    if found and host.link_differs(found, link):
        make_link(run, found, link)


def link_runtimes_site_packages(run: Run) -> None:
    """Runtimes built before the link existed: current, previous or a rollback target must have it
    before the unit that names it starts."""
    run.step("runtime links", f"check {FACTS['RUNTIMES_DIR']} by hand, then re-run")
    runtimes = run.layout.runtimes
    missing = []
    for runtime in sorted(runtimes.iterdir()) if runtimes.is_dir() else []:
        if runtime.is_dir() and (runtime / FACTS["MANIFEST_REL"]).is_file():
            found = host.site_packages_rel(runtime)
            if found and host.link_differs(found, runtime / FACTS["SITE_PACKAGES_REL"]):
                missing.append(runtime)
    if missing:
        names = " ".join(r.name for r in missing)
        rel = FACTS["SITE_PACKAGES_REL"]
        run.apply(f"link {rel} in {names}", f"linked {rel} in {names}",
                  lambda: [link_site_packages(run, r) for r in missing])
    else:
        run.report("unchanged")


def launcher_files(repo: Path) -> list[str]:
    """The checkout's launcher/ files as shipped (entry script, plugin table, the package)."""
    base = repo / "launcher"
    found = [str(p.relative_to(base)) for p in base.rglob("*")
             if p.is_file() and p.suffix in (".py", ".json", ".env") and "__pycache__" not in p.parts]
    return sorted(found, key=lambda p: p.encode())


def install_launcher(run: Run) -> None:
    """launcher/ into <runtime>/libexec; the bytecode is compiled here: the service cannot write the runtime."""
    run.step("launcher", "check the repo's launcher/ directory, then re-run")
    libexec = run.layout.runtimes / run.runtime_name / "libexec"
    updated = [rel for rel in launcher_files(run.repo)
               if host.file_differs((run.repo / "launcher" / rel).read_bytes(), libexec / rel, 0o644, bool(run.root))]
    if updated:
        shown = " ".join(updated)
        run.apply(f"install launcher files in {run.runtime_name}/libexec: {shown}",
                  f"launcher files in {run.runtime_name}/libexec: {shown}", lambda: copy_launcher(run, libexec, updated))
    else:
        run.report("unchanged")


def copy_launcher(run: Run, libexec: Path, files: list[str]) -> None:
    for rel in files:
        put_file(run, (run.repo / "launcher" / rel).read_bytes(), libexec / rel, 0o644)
    sh(libexec.parent / "bin" / "python", "-I", "-m", "compileall", "-q", libexec, stdout=subprocess.DEVNULL)


def switch_current(run: Run) -> None:
    run.step("current runtime", f"check {FACTS['CURRENT_LINK']} by hand (ls -l), then re-run")
    current = run.layout.current
    previous = os.readlink(current) if current.is_symlink() else ""
    target = f"runtimes/{run.runtime_name}"
    if previous == target:
        run.report(f"current -> {target} (unchanged)")
    elif previous:
        run.apply(f"point current at {run.runtime_name}",
                  f"current runtime {previous.removeprefix('runtimes/')} -> {run.runtime_name} (previous kept for rollback)",
                  lambda: link_runtime(run, previous))
    else:
        run.apply(f"point current at {target}", f"current -> {target}", lambda: link_runtime(run, ""))


def link_runtime(run: Run, previous: str) -> None:
    if previous:
        make_link(run, previous, run.layout.previous)
    make_link(run, f"runtimes/{run.runtime_name}", run.layout.current)


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

