#!/usr/bin/env python3
"""Start stock optillm 0.3.12 the way the optillm-proxy unit needs it, without modifying optillm.

Runs inside the runtime venv (stdlib + optillm only) as
`python -I libexec/optillm-proxy-launcher.py [--plugins LIST] <optillm flags>` and:
- passes the proxy key from systemd's credential `$CREDENTIALS_DIRECTORY/api-key` to optillm by
  appending `--optillm-api-key` to sys.argv in this process: /proc/PID/cmdline keeps the original
  argv and the key is never in the environment;
- loads only the plugins the deployment enables (`--plugins` or PROXY_PLUGINS: `none`, `all` or a
  comma list of slugs from plugins.json) by replacing optillm.server.load_plugins, which
  optillm.server.main() calls through the module global;
- tells systemd READY=1 (Type=notify) once /health really answers, with a STATUS= line, and sends
  WATCHDOG=1 only while /health keeps answering, so a hung server gets killed and restarted.

A configuration it cannot honour exits 78 (EX_CONFIG) with one line on stderr; the unit's
RestartPreventExitStatus=78 makes that a visible failed unit instead of a restart loop.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

EX_CONFIG = 78
HERE = Path(__file__).resolve().parent
PLUGIN_TABLE = HERE / "plugins.json"
# libexec/.. is the runtime root; install.sh writes the manifest there.
RUNTIME_MANIFEST = HERE.parent / "optillm-proxy-runtime.json"
DEFAULT_PROFILE = "full"  # a runtime without a manifest is a stock venv: it can import everything
CREDENTIAL_NAME = "api-key"
KEY_FILE_HINT = "/etc/optillm-proxy/api-key"
ENV_FILE_HINT = "/etc/optillm-proxy/env"
# The prefixes the gateway routes; all are optillm core approaches, loaded without any plugin.
ROUTED_STRATEGIES = ("moa", "bon", "plansearch", "self_consistency")
HEALTH_POLL_SECONDS = 0.2
HEALTH_TIMEOUT_SECONDS = 2.0
# The launcher's own /health probes carry this query (the route ignores it) so their access-log
# lines can be dropped: a watchdog ping every 10 s would otherwise flood the journal.
PROBE_QUERY = "probe=optillm-proxy-launcher"


class ConfigRefused(Exception):
    """A configuration the launcher will not start with; str() is the one line for the operator."""


# ---------------------------------------------------------------------------------------------
# Command line: our own option out, optillm's checked


def take_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """Remove `name VALUE` / `name=VALUE` from argv (optillm's parser must not see it).

    Exact match only: argparse would read an abbreviation of ours (`--plugins`) as optillm's
    `--plugins-dir`, so ours is taken out before optillm parses.
    """
    value, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == name:
            if i + 1 >= len(argv):
                raise ConfigRefused(f"{name} needs a value (none, all, or a comma list of plugin slugs)")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def _matches_option(arg: str, option: str) -> tuple[bool, str | None]:
    """Does argv token `arg` select optillm's `option`, argparse abbreviations included?"""
    if not arg.startswith("--") or len(arg) < 3:
        return False, None
    name, eq, inline = arg.partition("=")
    if len(name) > 2 and option.startswith(name):
        return True, inline if eq else None
    return False, None


def option_values(argv: list[str], option: str) -> list[str | None]:
    values = []
    for i, arg in enumerate(argv):
        hit, inline = _matches_option(arg, option)
        if hit:
            values.append(inline if inline is not None else (argv[i + 1] if i + 1 < len(argv) else None))
    return values


def option_value(argv: list[str], option: str, default: str) -> str:
    values = [v for v in option_values(argv, option) if v is not None]
    return values[-1] if values else default


def check_command_line(argv: list[str]) -> None:
    if option_values(argv, "--optillm-api-key"):
        raise ConfigRefused(
            "--optillm-api-key is on the command line, where every local user can read it: remove it; "
            f"the launcher reads the key from the systemd credential {CREDENTIAL_NAME} ({KEY_FILE_HINT})")
    for value in option_values(argv, "--approach"):
        if value in ("proxy", "auto"):
            raise ConfigRefused(
                f"--approach {value} is on the command line: remove it; "
                + ("'proxy' makes optillm skip every prefix strategy (moa-, bon-, ...)" if value == "proxy"
                   else "0.3.12 rejects 'auto'; prefix selection works only with --approach left out"))


def check_environment(environ: dict[str, str]) -> None:
    if "OPTILLM_API_KEY" in environ:
        raise ConfigRefused(
            "OPTILLM_API_KEY is set in the environment, which switches optillm 0.3.12 to local inference: "
            f"remove it from {ENV_FILE_HINT}; the proxy key belongs in {KEY_FILE_HINT}")
    stray = sorted(k for k in environ if k.startswith("OPTILLM_"))
    if stray:
        raise ConfigRefused(
            f"{', '.join(stray)} set in the environment: optillm reads OPTILLM_* as flag defaults, which would "
            f"silently change the unit's ExecStart flags; remove it from {ENV_FILE_HINT}")


# ---------------------------------------------------------------------------------------------
# The proxy key


def read_api_key(environ: dict[str, str]) -> str:
    directory = environ.get("CREDENTIALS_DIRECTORY")
    how = f"give the unit LoadCredential={CREDENTIAL_NAME}:{KEY_FILE_HINT}"
    if not directory:
        raise ConfigRefused(f"no proxy key: CREDENTIALS_DIRECTORY is not set; {how}")
    path = Path(directory) / CREDENTIAL_NAME
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigRefused(f"no proxy key: {path} does not exist; {how}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigRefused(f"cannot read the proxy key {path}: {exc.__class__.__name__}; {how}") from None
    if not key:
        raise ConfigRefused(f"the proxy key credential {path} is empty: write a key to {KEY_FILE_HINT} "
                            "(one line, not starting with sk-)")
    if any(c.isspace() for c in key):
        raise ConfigRefused(f"the proxy key in {KEY_FILE_HINT} must be one line without spaces")
    if key.startswith("sk-"):
        raise ConfigRefused(
            f"the proxy key in {KEY_FILE_HINT} starts with sk-, which optillm 0.3.12 forwards upstream as the "
            "provider key: generate a new one (e.g. opx- + random base64url)")
    return key


# ---------------------------------------------------------------------------------------------
# Which plugins load


def load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigRefused(f"{what} {path} is missing: reinstall the runtime") from None
    except (OSError, ValueError) as exc:
        raise ConfigRefused(f"{what} {path} is unreadable ({exc.__class__.__name__}): reinstall the runtime") from None


def runtime_profile() -> str:
    if not RUNTIME_MANIFEST.exists():
        return DEFAULT_PROFILE
    profile = load_json(RUNTIME_MANIFEST, "runtime manifest").get("profile")
    if not isinstance(profile, str) or not profile:
        raise ConfigRefused(f"runtime manifest {RUNTIME_MANIFEST} names no profile: reinstall the runtime")
    return profile


def plugin_table() -> dict[str, dict]:
    table = load_json(PLUGIN_TABLE, "plugin table").get("plugins")
    if not isinstance(table, dict) or not table:
        raise ConfigRefused(f"plugin table {PLUGIN_TABLE} lists no plugins: reinstall the runtime")
    return table


def parse_plugin_setting(setting: str, table: dict[str, dict]) -> str | list[str]:
    """`none` -> [], `all` -> "all", `a, b` -> ["a", "b"] (order kept, duplicates dropped)."""
    text = setting.strip().lower()
    if text in ("", "none"):
        return []
    if text == "all":
        return "all"
    slugs: list[str] = []
    for slug in (part.strip() for part in text.split(",")):
        if not slug:
            continue
        if slug in ("none", "all"):
            raise ConfigRefused(f"PROXY_PLUGINS={setting!r}: '{slug}' cannot be combined with plugin names")
        if slug not in table:
            raise ConfigRefused(f"PROXY_PLUGINS names unknown plugin '{slug}': known are {', '.join(sorted(table))}")
        if slug not in slugs:
            slugs.append(slug)
    return slugs


def check_profile(enabled: str | list[str], table: dict[str, dict], profile: str) -> None:
    slugs = sorted(table) if enabled == "all" else enabled
    missing = [s for s in slugs if profile not in table[s].get("profiles", [])]
    if not missing:
        return
    loadable = sorted(s for s in table if profile in table[s].get("profiles", []))
    raise ConfigRefused(
        f"plugin(s) {', '.join(missing)} cannot be imported by this runtime's '{profile}' profile: "
        f"install the full profile or set PROXY_PLUGINS to a subset of: {', '.join(loadable) or 'none'}")


def make_subset_loader(server, slugs: list[str], table: dict[str, dict]):
    """A load_plugins for optillm.server that imports only the named package plugin files.

    Fills server.plugin_approaches exactly as stock load_plugins does (module named after the file
    stem, SLUG -> run). Never looks at <cwd>/optillm/plugins or --plugins-dir: only code shipped
    in the locked package runs. A named plugin that fails to import stops the start (exit 78).
    """
    import optillm

    package_plugin_dir = Path(optillm.__file__).resolve().parent / "plugins"

    def load_plugins() -> None:
        server.plugin_approaches.clear()
        for slug in slugs:
            module_name = table[slug]["module"]
            plugin_file = package_plugin_dir / f"{module_name}.py"
            try:
                spec = importlib.util.spec_from_file_location(module_name, plugin_file)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except Exception as exc:  # any import-time failure of plugin code is a config problem here
                refuse(f"enabled plugin '{slug}' failed to load from {plugin_file}: "
                       f"{exc.__class__.__name__}: {exc} (remove it from PROXY_PLUGINS or fix the runtime)")
            if getattr(module, "SLUG", None) != slug or not callable(getattr(module, "run", None)):
                refuse(f"{plugin_file} does not define SLUG={slug!r} and run(): the plugin table does not match "
                       "this optillm; reinstall the runtime")
            server.plugin_approaches[module.SLUG] = module.run
            server.logger.info(f"Loaded package plugin: {module.SLUG}")
        server.logger.info(f"optillm-proxy-launcher: {len(slugs)} plugin(s) enabled by PROXY_PLUGINS")

    return load_plugins


# ---------------------------------------------------------------------------------------------
# systemd notification (sd_notify protocol, no dependency)


class Notifier:
    """Datagrams to $NOTIFY_SOCKET; failures are reported once and never reach the server."""

    def __init__(self, address: str | None):
        self.address = address
        self._warned = False
        if address and address.startswith("@"):
            self.address = "\0" + address[1:]  # abstract socket namespace

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(f"optillm-proxy-launcher: cannot notify systemd at {self.address!r}: {exc}",
                      file=sys.stderr, flush=True)
            return False


def health_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200 and json.load(resp).get("status") == "ok"
    except Exception:  # refused, timed out, half-started server: all mean "not healthy yet"
        return False


def watchdog_interval(environ: dict[str, str]) -> float | None:
    """Seconds of WatchdogSec= meant for this process, or None."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def status_line(server, address: str, expected: list[str] = ()) -> str:
    loaded = sorted(server.plugin_approaches)
    plugins = f"{len(loaded)} plugin(s): {', '.join(loaded)}" if loaded else "0 plugins"
    failed = [slug for slug in expected if slug not in loaded]
    if failed:
        # Stock loading (PROXY_PLUGINS=all) logs a failed plugin and goes on; say so where operators look.
        plugins += f"; FAILED to load: {', '.join(failed)} (see the journal)"
    strategies = ", ".join(f"{s}-" for s in ROUTED_STRATEGIES)
    return (f"serving {address}; strategies by model prefix: {strategies} "
            f"(+{len(server.known_approaches) - 1 - len(ROUTED_STRATEGIES)} more core); {plugins}")


def supervise(server, notifier: Notifier, host: str, port: int, interval: float | None,
              stop: threading.Event | None = None, expected: list[str] = ()) -> None:
    """Background thread: READY=1 once /health answers, then watchdog pings while it keeps answering."""
    stop = stop or threading.Event()
    poll_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in poll_host:
        poll_host = f"[{poll_host}]"
    address = f"http://{poll_host}:{port}"
    url = f"{address}/health?{PROBE_QUERY}"
    while not health_ok(url, HEALTH_TIMEOUT_SECONDS):
        if stop.wait(HEALTH_POLL_SECONDS):
            return
    status = status_line(server, address, expected)
    notifier.send(f"READY=1\nSTATUS={status}")
    if interval is None:
        return
    period = interval / 2
    # /health must answer well inside the period, or this ping is skipped; two misses in a row
    # exceed WatchdogSec and systemd aborts and restarts the service.
    bound = max(0.5, min(5.0, period / 2))
    healthy = True
    next_ping = time.monotonic()
    while not stop.is_set():
        if health_ok(url, bound):
            notifier.send("WATCHDOG=1" if healthy else f"WATCHDOG=1\nSTATUS={status}")
            healthy = True
        elif healthy:
            healthy = False
            notifier.send(f"STATUS=/health did not answer within {bound:g} s: watchdog not fed")
        # After a stall (stopped process, slow probe) resume the cadence instead of catching up.
        next_ping = max(next_ping + period, time.monotonic())
        stop.wait(next_ping - time.monotonic())


# ---------------------------------------------------------------------------------------------


class DropOwnProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return PROBE_QUERY not in record.getMessage()
        except Exception:
            return True


def refuse(message: str) -> NoReturn:
    print(f"optillm-proxy-launcher: refused: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def on_sigterm(signum, frame):
    # The server's main loop unwinds through main(); systemd sees a clean stop (exit 0).
    raise SystemExit(0)


def prepare(argv: list[str], environ: dict[str, str]) -> tuple[list[str], str | list[str], dict, str]:
    """Every check that needs no optillm import, so a refusal is fast and has no side effect."""
    setting, argv = take_option(argv, "--plugins")
    if setting is None:
        setting = environ.get("PROXY_PLUGINS", "none")
    check_environment(environ)
    check_command_line(argv)
    table = plugin_table()
    enabled = parse_plugin_setting(setting, table)
    check_profile(enabled, table, runtime_profile())
    key = read_api_key(environ)
    return argv, enabled, table, key


def main() -> None:
    try:
        args, enabled, table, key = prepare(sys.argv[1:], dict(os.environ))
    except ConfigRefused as exc:
        refuse(str(exc))
    host = option_value(args, "--host", "127.0.0.1")
    try:
        port = int(option_value(args, "--port", "8000"))
    except ValueError:
        refuse("--port must be a number")
    # Changing sys.argv here does not change /proc/PID/cmdline: the key stays out of `ps`.
    sys.argv = [sys.argv[0], *args, "--optillm-api-key", key]
    del key

    # Children (Jupyter kernels, MCP servers) must not talk to systemd in our name.
    notifier = Notifier(os.environ.pop("NOTIFY_SOCKET", None))
    interval = watchdog_interval(dict(os.environ))
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    signal.signal(signal.SIGTERM, on_sigterm)
    # A watchdog abort (SIGABRT) of a hung server leaves every thread's stack in the journal.
    faulthandler.enable()
    # python -I ignores PYTHONUNBUFFERED; line-buffer stdout so prints reach the journal promptly.
    sys.stdout.reconfigure(line_buffering=True)
    logging.getLogger("werkzeug").addFilter(DropOwnProbes())

    import optillm.server as server

    if enabled != "all":
        server.load_plugins = make_subset_loader(server, enabled, table)
    threading.Thread(target=supervise, name="sd-notify", daemon=True,
                     args=(server, notifier, host, port, interval, None,
                           sorted(table) if enabled == "all" else enabled)).start()
    try:
        server.main()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 0
    else:
        code = 0
    notifier.send("STOPPING=1")
    if isinstance(code, str):  # sys.exit("message") from optillm: keep the message, as Python would
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Plugin threads (browser sessions, health checkers) may be non-daemon; do not wait for them.
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
