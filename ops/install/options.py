"""install.sh's flags, settings and --help text; the one parser of them.

Stdlib only: install.sh runs `front` with the system Python before anything is installed (usage
errors, --help, --uninstall and the prerequisites of --upgrade/--rollback are answered there), and
`opsctl install` parses the same arguments again with `parse`.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ops.from_launcher.layout import FACTS, OPTILLM_VERSION, PROFILES, Layout

EXIT_OK = 0             # installed and healthy; or nothing to do; or staged (--root); or dry run
EXIT_STEP_FAILED = 1    # a step failed; the message names it and what to do
EXIT_USAGE = 2          # bad flag or value
EXIT_NO_SYSTEMD = 3     # installed everything, but systemd is not PID 1: service not started
EXIT_UNHEALTHY = 4      # the service was (re)started but failed to become ready
EXIT_PREREQ = 5         # prerequisite missing (not root, no lock, unit absent, no LiteLLM key)
EXIT_CONFIG_REFUSED = 6  # the launcher would refuse the new configuration: nothing restarted

SYSTEM_PYTHON = "/usr/bin/python3"
PROG = "install.sh"
ROOT_PATTERN = re.compile(r"[A-Za-z0-9._/+-]+")
ROOT_MAX = 160


# The flags that take no value, and the option each sets.
SWITCHES = {"--rollback": "rollback", "--dry-run": "dry_run", "--json": "json", "--no-start": "skip_start",
            "--uninstall": "uninstall", "--purge": "purge"}


class UsageError(Exception):
    """str() is the one line after `install.sh: `; exits EXIT_USAGE unless `code` says otherwise."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    profile: str = ""
    profile_given: bool = False
    root: str = ""
    skip_start: bool = False
    dry_run: bool = False
    json: bool = False
    uninstall: bool = False
    purge: bool = False
    upgrade: bool = False
    upgrade_lock: str = ""
    rollback: bool = False
    help: bool = False
    # From install.sh (not in --help): the checkout it runs from, what it changed before handing over.
    toolkit: str = ""
    bootstrapped: list[str] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root or "/"))

    @property
    def mode(self) -> str:
        return "upgrade" if self.upgrade else "rollback" if self.rollback else "uninstall" if self.uninstall else "install"


    @property
    def checkout(self) -> Path:
        """The toolkit checkout: --toolkit (install.sh passes it to opsctl's venv), else the working
        directory when it is one (`cd toolkit && sudo opsctl install --dry-run`), else where this
        module sits (install.sh's first call, from the checkout)."""
        if self.toolkit:
            return Path(self.toolkit)
        here = Path.cwd()
        return here if (here / "install.sh").is_file() and (here / "launcher").is_dir() else CHECKOUT


# Where this module sits when run from the checkout (install.sh's first call).
CHECKOUT = Path(__file__).resolve().parents[2]


def supported_pythons(checkout: Path) -> str:
    """The Pythons the checkout has locks for (locks/py<X.Y>/), as `3.11, 3.12`."""
    versions = sorted((p.name[2:] for p in (checkout / "locks").glob("py[0-9]*.[0-9]*") if p.is_dir()),
                      key=lambda v: tuple(int(x) for x in v.split(".")))
    return ", ".join(versions)


def parse(argv: list[str], environ=os.environ, cwd: str | None = None) -> Options:
    """Flags override OPX_INSTALL_PROFILE, OPX_INSTALL_ROOT and OPX_INSTALL_SKIP_START."""
    cwd = cwd or os.getcwd()
    opts = Options(profile=environ.get("OPX_INSTALL_PROFILE") or FACTS["DEFAULT_PROFILE"],
                   profile_given=bool(environ.get("OPX_INSTALL_PROFILE")),
                   root=environ.get("OPX_INSTALL_ROOT", ""), skip_start=bool(environ.get("OPX_INSTALL_SKIP_START")))
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name == "--profile":
            if not eq:
                if not args:
                    raise UsageError("--profile needs a value: lean or full")
                value = args.pop(0)
            opts.profile, opts.profile_given = value, True
        elif name == "--upgrade":
            opts.upgrade = True
            if eq:
                opts.upgrade_lock = value
            elif args and not args[0].startswith("-"):
                opts.upgrade_lock = args.pop(0)
        elif name == "--root":
            if not eq:
                if not args:
                    raise UsageError("--root needs a directory")
                value = args.pop(0)
            opts.root = value
        elif name == "--toolkit" and eq:
            opts.toolkit = value
        elif name == "--bootstrapped" and eq:
            opts.bootstrapped.append(value)
        elif arg in SWITCHES:
            setattr(opts, SWITCHES[arg], True)
        elif arg in ("-h", "--help"):
            opts.help = True
            return opts
        else:
            raise UsageError(f"unknown argument '{arg}' (see ./install.sh --help)")
    if opts.profile not in PROFILES:
        raise UsageError(f"unknown profile '{opts.profile}': use --profile lean or --profile full")
    if opts.purge and not opts.uninstall:
        raise UsageError("--purge only goes with --uninstall")
    if opts.json and opts.uninstall:
        raise UsageError("--json goes with an install, --upgrade or --rollback run, not with --uninstall")
    if opts.upgrade or opts.rollback:
        if opts.upgrade and opts.rollback:
            raise UsageError("--upgrade and --rollback are two separate runs")
        if opts.root or opts.dry_run or opts.uninstall or opts.skip_start:
            raise UsageError("--upgrade/--rollback start and switch the real service: they do not combine with "
                             "--root, --dry-run, --no-start or --uninstall")
        if opts.upgrade_lock and not opts.upgrade_lock.startswith("/"):
            opts.upgrade_lock = f"{cwd}/{opts.upgrade_lock}"
    if opts.root:
        root = opts.root if opts.root.startswith("/") else f"{cwd}/{opts.root}"
        root = root.rstrip("/") or "/"
        # The staged opsctl's #! line names its python under ROOT (the kernel splits it at whitespace
        # and reads 255 bytes at most): a staging is not movable.
        if not ROOT_PATTERN.fullmatch(root) or len(root) > ROOT_MAX:
            raise UsageError(f"--root {shell_quote(root)}: stage under a path of letters, digits and ._/+- only, "
                             f"at most {ROOT_MAX} characters long (opsctl's #! line names its python there)")
        opts.root = root
    return opts


def shell_quote(text: str) -> str:
    """As bash's ${var@Q} shows it."""
    return "'" + text.replace("'", "'\\''") + "'"


def usage(checkout: Path | None = None) -> str:
    f = FACTS
    # Read from the checkout's locks/; `opsctl install --help` away from one names the directory.
    pythons = supported_pythons(checkout or CHECKOUT) or "locks/py<X.Y>/ in the toolkit"
    return f"""\
Usage: sudo ./install.sh [--profile lean|full] [--root DIR] [--dry-run] [--no-start]
       sudo ./install.sh --uninstall [--purge] [--root DIR] [--dry-run]
       sudo ./install.sh --upgrade [LOCK] [--profile lean|full]
       sudo ./install.sh --rollback

Installs OptiLLM {OPTILLM_VERSION} from locks/py<X.Y>/<profile>.txt, X.Y being {SYSTEM_PYTHON}'s version
(hashes required, bytecode compiled), as the systemd service {f['SERVICE']} on {f['LISTEN_HOST']}:{f['LISTEN_PORT']},
upstream {f['UPSTREAM_URL']}.
Re-running changes only what differs and applies it to the service once: a reload (a new process
takes over, nothing waits) when only the env, a key or the provider file changed; a restart when the
unit, launcher, runtime or a drop-in changed, or it was not running.
It never overwrites {f['ENV_FILE']} or {f['KEY_FILE']} (it only moves an OPENAI_API_KEY= line of the env
file into {f['UPSTREAM_KEY_FILE']}).
install.sh checks the flags, root and {SYSTEM_PYTHON}, bootstraps uv and opsctl from their hashed
locks, then hands over to `opsctl install` (the same flags; this text is its --help).

Options:
  --profile P     runtime profile: lean (default; core approaches, no torch) or full (stock,
                  every bundled plugin). Env: OPX_INSTALL_PROFILE. A re-run without it keeps
                  the installed profile; switching is an upgrade (--upgrade --profile P)
  --root DIR      stage the whole layout under DIR without root: no user, chown, apt or
                  systemctl (used by the tests; DIR: letters, digits, ._/+-; not movable
                  afterwards). Env: OPX_INSTALL_ROOT
  --dry-run       print each step and what it would change; write nothing
  --no-start      install everything but do not (re)start the service. Env: OPX_INSTALL_SKIP_START=1
  --json          the summary as one JSON object on stdout (changed, restarted, reloaded, runtime, profile,
                  lock, health, next); progress goes to stderr. With --upgrade/--rollback: opsctl
                  runtime's outcome (exit_code, changed, message, current, previous)
  --uninstall     stop and remove the unit, runtimes, tools, opsctl link and service user;
                  keeps {f['CONF_DIR']} and {f['STATE_DIR']}
  --purge         with --uninstall: also remove {f['CONF_DIR']}, {f['STATE_DIR']} and unit drop-ins
  --upgrade [LOCK]  build a runtime from LOCK (default locks/py<X.Y>/<profile>.txt; profile: --profile,
                  else the current runtime's) beside the running one, validate it on a spare
                  port under the unit's own settings (opsctl lint, opsctl smoke --all), then
                  switch to it with one restart; switches back by itself if it fails after.
                  Switching profiles (--upgrade --profile full) is an upgrade.
  --rollback      back to the previous runtime, one restart (opsctl runtime rollback)
  -h, --help      this text
Environment:
  UV_CACHE_DIR    uv's cache (honoured; uv hardlinks the runtime from it)

Layout: runtimes in {f['RUNTIMES_DIR']}/<version>-<profile>-<lock sha256[:12]>/, {f['CURRENT_LINK']}
(and {f['PREVIOUS_LINK']}) link to one; uv and opsctl in {f['TOOLS_DIR']}/; {f['OPSCTL_LINK']};
env file {f['ENV_FILE']}, key files {f['KEY_FILE']} and {f['UPSTREAM_KEY_FILE']} (root 0600); units {f['UNIT_FILE']}
and {f['SOCKET_FILE']}; the user and directories in {f['SYSUSERS_FILE']} and {f['TMPFILES_FILE']};
uninstall script {f['UNINSTALL_SCRIPT']}.

Exit codes:
  {EXIT_OK}  installed and healthy, nothing to do, staged with --root, or dry run
  {EXIT_STEP_FAILED}  a step failed (the message names the step and what to do)
  {EXIT_USAGE}  usage error (unknown flag, bad value)
  {EXIT_NO_SYSTEMD}  installed, but systemd is not PID 1 here: the service was not started
  {EXIT_UNHEALTHY}  the service was (re)started but did not become healthy (failed to report ready)
  {EXIT_PREREQ}  prerequisite missing (not root, no lock for {SYSTEM_PYTHON}'s version ({pythons}) or for
     the profile on it, lock or unit file absent, no LiteLLM key in {f['UPSTREAM_KEY_FILE']}: everything
     else installed, the service not started)
  {EXIT_CONFIG_REFUSED}  the launcher would refuse the new configuration (opsctl runtime check): the running service
     was not restarted and keeps the previous configuration; the summary quotes the refusal
With --upgrade/--rollback, once the runtime is built, the exit code is opsctl runtime's:
  0  switched (or already current)   1  refused at validation: nothing switched, service untouched
  2  installation problem or busy    3  failed after the switch: switched back, healthy again
  4  failed after the switch and still unhealthy after switching back: act now
"""


def fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def check_installation(opts: Options) -> None:
    """--upgrade/--rollback act on the running installation: root, systemd and an install first."""
    lay = opts.layout
    flag = "--upgrade" if opts.upgrade else "--rollback"
    if os.geteuid() != 0:
        raise UsageError(f"must run as root: sudo ./install.sh {flag}", EXIT_PREREQ)
    if not Path("/run/systemd/system").is_dir():
        raise UsageError("systemd is not PID 1 here: an upgrade validates and switches the running service, "
                         "which needs it", EXIT_NO_SYSTEMD)
    if not (lay.current.is_symlink() and os.access(lay.opsctl, os.X_OK)):
        raise UsageError(f"no installation here ({FACTS['CURRENT_LINK']}, {FACTS['TOOLS_DIR']}/opsctl): "
                         "run sudo ./install.sh first", EXIT_PREREQ)
    if opts.upgrade_lock and not Path(opts.upgrade_lock).is_file():
        raise UsageError(f"no lock file at {opts.upgrade_lock}: give a hashed lock (see locks/ and how they "
                         "are regenerated)")


def preflight(opts: Options) -> None:
    """What an install, upgrade or rollback needs before it writes anything."""
    if opts.upgrade or opts.rollback:
        check_installation(opts)
    elif not opts.root and not opts.dry_run and os.geteuid() != 0:
        raise UsageError("must run as root: sudo ./install.sh (or stage without root: ./install.sh --root DIR)",
                         EXIT_PREREQ)


PLAN_FD = 3  # install.sh captures only this descriptor: --help and --uninstall stream to the terminal


def front(argv: list[str]) -> int:
    """install.sh's first call, with the system Python: answers --help, usage errors, --uninstall
    and the prerequisites it can check before anything is written; otherwise writes for the
    bootstrap `MODE ROOT DRY_RUN JSON` on one line (ROOT `-` when none) to PLAN_FD and exits 0."""
    try:
        opts = parse(argv)
        if opts.help:
            print(usage(), end="")
            return EXIT_OK
        if opts.uninstall:
            from ops.install.templates import uninstall

            return uninstall(opts)
        preflight(opts)
    except UsageError as exc:
        return fail(str(exc), exc.code)
    os.write(PLAN_FD, f"{opts.mode} {opts.root or '-'} {int(opts.dry_run)} {int(opts.json)}\n".encode())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(front(sys.argv[1:]))
