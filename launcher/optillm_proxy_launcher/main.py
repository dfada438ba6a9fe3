"""Start stock optillm 0.3.12 the way the optillm-proxy unit needs it: checks, patches, serve.

Order matters: every configuration check that needs no optillm import runs first (a refusal is
fast and has no side effect); then optillm.server is imported, its patch points verified against
0.3.12 and installed (patches.py); then optillm's own main() parses its flags and serves.
A configuration the launcher cannot honour exits 78 (EX_CONFIG) with one line on stderr; the
unit's RestartPreventExitStatus=78 makes that a visible failed unit instead of a restart loop.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from typing import NoReturn

from optillm_proxy_launcher import notify, patches, records, redact, reload, routes, serving, settings
from optillm_proxy_launcher.admission import Admission
from optillm_proxy_launcher.gateway import Gate
from optillm_proxy_launcher.plugins import make_subset_loader
from optillm_proxy_launcher.policy import CLIENT_OPTIONS, Policy
from optillm_proxy_launcher.settings import ConfigRefused
from optillm_proxy_launcher.upstream import Bounds, Registry, SharedUpstream


# Set when this launcher takes over from a running one (a reload): it hears why this one refused.
HANDOFF: reload.Handoff | None = None


def refuse(message: str) -> NoReturn:
    print(f"optillm-proxy-launcher: refused: {message}", file=sys.stderr, flush=True)
    if HANDOFF is not None:
        HANDOFF.refused(message)
    raise SystemExit(settings.EX_CONFIG)


def on_sigterm(signum, frame):
    # Until the server runs (serving.py then drains instead): unwind through main(), exit 0.
    raise SystemExit(0)


def request_fields() -> frozenset[str]:
    """The request fields the locked openai-python's chat.completions.create() accepts."""
    import inspect

    from openai.resources.chat.completions import Completions

    names = set(inspect.signature(Completions.create).parameters) - {"self"}
    return frozenset(names - CLIENT_OPTIONS)


def install(server, prepared: settings.Prepared, run, gates: list | None = None) -> SharedUpstream:
    """Verify and install every patch point (patches.py); returns the shared upstream client. The
    gate made is appended to `gates` (the server's own refusals are recorded through it)."""
    patches.verify_module(server)
    registry = Registry()
    request = prepared.request
    config = server.server_config
    upstream = SharedUpstream(prepared.upstream_key, prepared.upstream_url,
                              Bounds(request.upstream_timeout, request.upstream_retries), registry,
                              verify=lambda: config.get("ssl_cert_path") or bool(config.get("ssl_verify", True)))
    names = frozenset({*server.known_approaches, *prepared.table, *server.plugin_approaches})
    policy = Policy(request, names, request_fields())
    loader = None if prepared.enabled == "all" else make_subset_loader(server, prepared.enabled, prepared.table)
    from optillm_proxy_launcher.metrics import Metrics

    metrics = Metrics(approaches=sorted(request.approaches))
    sender = records.make_sender(request.records, os.environ)
    if sender:  # journald directly, around the redacting stderr: redact its fields too
        sender = redact.redacting_sender(sender, redact.Redactor(known_keys(prepared)))
    observers = [metrics.observe] + ([sender] if sender else [])

    def made(gate: Gate) -> Gate:
        if gates is not None:
            gates.append(gate)
        return gate

    patches.apply(server, load_plugins=loader, upstream=upstream,
                  gate_factory=lambda app: made(Gate(admission_layer(request)(app), policy, registry,
                                                     prepared.upstream_url, observers, metrics.app,
                                                     metrics.in_flight)),
                  guard_routes=lambda app: routes.install(app, policy), run=run)
    return upstream


def known_keys(prepared: settings.Prepared) -> dict[str, str]:
    return {"proxy-key": prepared.key, "upstream-key": prepared.upstream_key}


def admission_layer(request: settings.RequestSettings):
    """admission.py around optillm's Flask app, inside the gate: a 503 it sends is recorded and
    counted by the gate like any refusal, under its own rule (overloaded_busy, overloaded_memory)."""
    return lambda app: Admission(app, request.admit_requests, request.admit_body_bytes, note_refusal)


def note_refusal(environ: dict, reason: str) -> None:
    environ[routes.RULE_KEY] = f"overloaded_{reason}"


def check_and_exit(server, prepared: settings.Prepared) -> NoReturn:
    """--check: what a start would refuse, without serving: every check above, the patch points,
    and the enabled plugins really imported (stock loading, with `all`, only logs a failure)."""
    server.load_plugins()
    enabled = settings.enabled_slugs(prepared.enabled, prepared.table)
    failed = [slug for slug in enabled if slug not in server.plugin_approaches]
    if failed:
        refuse(f"plugin(s) {', '.join(failed)} failed to load (see the lines above): remove them from "
               "PROXY_PLUGINS or install a profile that has them")
    print(f"optillm-proxy-launcher: configuration accepted ({len(enabled)} plugin(s), "
          f"approaches {', '.join(sorted(prepared.request.approaches)) or 'none'})", flush=True)
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    global HANDOFF
    started_with = dict(os.environ)  # what a reload's new launcher keeps (reload.compose_environment)
    try:
        HANDOFF, unit_args = reload.take_handoff(sys.argv[1:])
        prepared = settings.prepare(unit_args, os.environ,
                                    credentials=HANDOFF.credentials if HANDOFF else None)
    except ConfigRefused as exc:
        refuse(str(exc))
    args = prepared.argv
    try:
        host, port = settings.listen_address(args)
        # Before the slow optillm import, so a wrong socket unit is refused at once.
        listen = (serving.adopt_socket(HANDOFF.listen_fd, host, port) if HANDOFF
                  else serving.inherited_socket(os.environ, os.getpid(), host, port))
    except ConfigRefused as exc:
        refuse(str(exc))
    # Changing sys.argv here does not change /proc/PID/cmdline: the key stays out of `ps`.
    sys.argv = [sys.argv[0], *args, "--optillm-api-key", prepared.key]
    if "proxy" in settings.enabled_slugs(prepared.enabled, prepared.table):
        # The proxy plugin's provider file names ${OPENAI_API_KEY}: in this process only (set after
        # start, it is not in /proc/PID/environ), but children the plugins start inherit it.
        os.environ[settings.UPSTREAM_KEY_VARIABLE] = prepared.upstream_key

    # Children (Jupyter kernels, MCP servers) must not talk to systemd in our name.
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    watchdog_usec = os.environ.get("WATCHDOG_USEC")
    interval = notify.watchdog_interval(dict(os.environ))
    if HANDOFF:  # main (and so heard by systemd) only once the running launcher says go
        notify_socket, watchdog_usec = HANDOFF.notify_socket, HANDOFF.watchdog_usec
        interval = notify.watchdog_interval({"WATCHDOG_USEC": watchdog_usec or ""})
    notifier = notify.Notifier(None if HANDOFF else notify_socket)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    signal.signal(signal.SIGTERM, on_sigterm)
    # A watchdog abort (SIGABRT) of a hung server leaves every thread's stack in the journal.
    faulthandler.enable()
    # python -I ignores PYTHONUNBUFFERED; line-buffer stdout so prints reach the journal promptly.
    sys.stdout.reconfigure(line_buffering=True)
    # Before optillm's import: the logging handlers it makes keep the stream they were given.
    redact.install(known_keys(prepared))

    import optillm.server as server

    supervisor_stop = threading.Event()
    switching = serving.Switching()

    control = None  # the reload control socket: bound now at a private name, named once serving
    control_path = reload.control_socket_path(started_with)
    if listen is not None and control_path is not None:  # systemd's socket only: not a validation unit
        launch = reload.Launch([sys.executable, "-I", os.path.abspath(sys.argv[0]), *unit_args], started_with,
                               listen.fileno(), notify_socket, watchdog_usec)
        control = reload.Control(launch, notifier, switching.request, switching.stopping.is_set)
        try:
            control.bind(control_path)
        except OSError as exc:
            control = None
            print(f"optillm-proxy-launcher: no reload: cannot listen on {control_path}: {exc.strerror}; "
                  "configuration changes need a restart", file=sys.stderr, flush=True)

    def on_serving() -> None:
        threading.Thread(target=notify.supervise, name="sd-notify", daemon=True,
                         args=(server, notifier, host, port, interval, supervisor_stop,
                               settings.enabled_slugs(prepared.enabled, prepared.table),
                               sorted(prepared.request.approaches))).start()
        if control is not None:
            try:
                control.publish()
                control.serve_in_background()
            except OSError as exc:
                print(f"optillm-proxy-launcher: no reload: cannot name {control_path}: {exc.strerror}; "
                      "configuration changes need a restart", file=sys.stderr, flush=True)
        if HANDOFF is not None:
            HANDOFF.serving()

    try:
        gates: list[Gate] = []
        run = serving.make_run(notifier, prepared.request, listen, supervisor_stop,
                               on_refused=lambda environ, status, rule: gates[0].record_refused(environ, status, rule),
                               switching=switching, handoff=HANDOFF, on_serving=on_serving)
        install(server, prepared, run, gates)
        if prepared.check_only:
            check_and_exit(server, prepared)
    except ConfigRefused as exc:
        refuse(str(exc))
    try:
        server.main()
    except ConfigRefused as exc:  # an enabled plugin failed to load
        print(f"optillm-proxy-launcher: refused: {exc}", file=sys.stderr)
        if HANDOFF is not None:
            HANDOFF.refused(str(exc))
        code = settings.EX_CONFIG
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
