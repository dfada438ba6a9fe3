"""Every refusal of the launcher (exit 78) is a lint error with the launcher's own words.

The refusal sites are enumerated from the launcher's source (every `raise` of a ConfigRefused and
every `refuse(...)` with its own message): each is either reached by a case below or listed in
NOT_LINTABLE with the reason no file on disk can show it. A new refusal without either fails
test_every_refusal_site_is_accounted_for.

Each case breaks the lint corpus's good deployment in one way. The launcher then runs on those
very files: its argv from the unit's ExecStart, its environment from the env file and the unit's
Environment= (read as systemd reads them), a credentials directory with the credentials the unit
loads, and the deployment's runtime (manifest, plugin table) around a copy of the launcher. It
must refuse at the case's site, and lint must report the case's rule with REFUSES + the
launcher's message. The fast tier runs the launcher's checks as main() does before it imports
optillm: in this process, or, for a socket, in a process holding it on fd 3 as systemd passes it.
The `real` tier runs the copy as the unit would, `python -I launcher --check` with the real lean
runtime's python: exit 78, one line, the same message; and first shows the unbroken deployment
accepted (optillm imported, patch points verified, the plugin loaded).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from optillm_proxy_launcher import settings

from ops.lint.context import Context
from ops.lint.readers.envfile import parse_env_file
from ops.lint.readers.unitfile import environment_assignments, split_words
from ops.lint.rules._launcher import REFUSES
from tests.lint.corpus import EXEC
from tests.lint.deployment import Deployment

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_DIR = REPO / "launcher"
PACKAGE = LAUNCHER_DIR / "optillm_proxy_launcher"
REFUSED_PREFIX = "optillm-proxy-launcher: refused: "


@dataclass(frozen=True)
class Refusal:
    id: str
    site: str  # module.function#n: the n-th refusal in that function (see refusal_sites)
    rule: str
    break_it: Callable[[Deployment], None]


def flags(new: str) -> Callable[[Deployment], None]:
    return lambda d: d.replace("unit", EXEC, new)


def env_add(text: str) -> Callable[[Deployment], None]:
    return lambda d: d.append("env", text)


def plugins(value: str) -> Callable[[Deployment], None]:
    return lambda d: d.replace("env", "PROXY_PLUGINS=majority_voting", f"PROXY_PLUGINS={value}")


def write(kind: str, text: str) -> Callable[[Deployment], None]:
    return lambda d: d.write(kind, text)


def unload(name: str) -> Callable[[Deployment], None]:
    return lambda d: d.replace("unit", f"LoadCredential={name}:/etc/optillm-proxy/{name}\n", "")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_table(text: str | None) -> Callable[[Deployment], None]:
    def break_it(d: Deployment) -> None:
        table = d.venv / "libexec" / "plugins.json"
        if text is None:
            table.unlink()
        else:
            table.write_text(text)
    return break_it


CASES = [
    # environment (settings.check_environment)
    Refusal("optillm-api-key-in-env-file", "settings.check_environment#1", "optillm-api-key-configured",
            env_add("OPTILLM_API_KEY=opx-abc\n")),
    Refusal("optillm-variable-in-env-file", "settings.check_environment#2", "optillm-variable",
            env_add("OPTILLM_APPROACH=moa\n")),
    Refusal("optillm-variable-in-a-drop-in", "settings.check_environment#2", "optillm-variable",
            lambda d: d.dropin("log.conf", "[Service]\nEnvironment=OPTILLM_LOG=debug\n")),
    Refusal("litellm-key-in-env-file", "settings.check_environment#3", "upstream-key-in-env-file",
            env_add("OPENAI_API_KEY=sk-litellm\n")),
    Refusal("other-provider-key", "settings.check_environment#4", "other-provider-key",
            env_add("CEREBRAS_API_KEY=csk-abc\n")),
    # command line
    Refusal("key-on-command-line", "settings.check_key_not_on_command_line#1", "key-on-command-line",
            flags(EXEC + " --optillm-api-key opx-abc")),
    Refusal("key-option-abbreviated", "settings.check_key_not_on_command_line#1", "key-on-command-line",
            flags(EXEC + " --optillm-api=opx-abc")),
    Refusal("approach-proxy", "settings.check_approach_value#1", "approach-proxy",
            flags(EXEC + " --approach proxy")),
    Refusal("approach-proxy-abbreviated", "settings.check_approach_value#1", "approach-proxy",
            flags(EXEC + " --appr proxy")),
    Refusal("approach-auto", "settings.check_approach_value#1", "approach-auto",
            flags(EXEC + " --approach=auto")),
    Refusal("no-base-url", "settings.check_base_url#1", "base-url-not-loopback",
            flags(EXEC.replace(" --base-url http://127.0.0.1:4000/v1", ""))),
    Refusal("empty-base-url", "settings.check_base_url#1", "base-url-not-loopback",
            flags(EXEC.replace("--base-url http://127.0.0.1:4000/v1", "--base-url="))),
    Refusal("port-not-a-number", "settings.listen_address#1", "exec-start",
            flags(EXEC.replace("--port 4020", "--port 40x20"))),
    # the socket systemd passes (bound here as systemd binds the socket unit's ListenStream=)
    Refusal("socket-on-another-port", "settings.check_socket_address#1", "socket-address",
            lambda d: d.replace("socket", "ListenStream=127.0.0.1:4020", f"ListenStream=127.0.0.1:{free_port()}")),
    Refusal("socket-two-listen-streams", "settings.check_socket_count#1", "socket-address",
            lambda d: d.replace("socket", "ListenStream=127.0.0.1:4020",
                                f"ListenStream=127.0.0.1:{free_port()}\nListenStream=127.0.0.1:{free_port()}")),
    # which plugins
    Refusal("plugins-option-without-value", "settings.take_option#1", "proxy-plugins-unknown",
            flags(EXEC + " --plugins")),
    Refusal("unknown-plugin", "settings.parse_plugin_setting#2", "proxy-plugins-unknown",
            plugins("majority_voting,readurl")),
    Refusal("unknown-plugin-in-option", "settings.parse_plugin_setting#2", "proxy-plugins-unknown",
            flags(EXEC + " --plugins=nosuch")),
    Refusal("none-with-names", "settings.parse_plugin_setting#1", "proxy-plugins-unknown",
            plugins("none,majority_voting")),
    Refusal("plugin-not-in-lean", "settings.check_profile#1", "plugin-not-in-profile",
            plugins("executecode,majority_voting,readurls")),
    Refusal("all-on-lean", "settings.check_profile#1", "plugin-not-in-profile", plugins("all")),
    Refusal("manifest-not-json", "settings.runtime_profile#1", "plugin-not-in-profile",
            write("manifest", "{profile: lean")),
    Refusal("manifest-without-profile", "settings.runtime_profile#2", "plugin-not-in-profile",
            write("manifest", '{"optillm_version": "0.3.12"}')),
    Refusal("plugin-table-missing", "settings.load_json#1", "plugin-not-in-profile", plugin_table(None)),
    Refusal("plugin-table-not-json", "settings.load_json#2", "plugin-not-in-profile", plugin_table("{")),
    Refusal("plugin-table-empty", "settings.plugin_table#1", "plugin-not-in-profile",
            plugin_table('{"plugins": {}}')),
    # request settings
    Refusal("bound-not-a-number", "settings.Bound.parse#1", "request-settings",
            env_add("REQUEST_DEADLINE_SECONDS=5m\n")),
    Refusal("bound-out-of-range", "settings.Bound.parse#2", "request-settings", env_add("UPSTREAM_RETRIES=9\n")),
    Refusal("records-unknown", "settings.parse_records#1", "request-settings", env_add("PROXY_RECORDS=yes\n")),
    Refusal("usage-unknown", "settings.parse_usage#1", "request-settings", env_add("PROXY_USAGE=true\n")),
    Refusal("admission-below-max-request", "settings.check_admission#1", "request-settings",
            env_add("ADMIT_BODY_BYTES=1024\n")),
    Refusal("connections-below-threads", "settings.check_admission#2", "request-settings",
            env_add("CONNECTION_LIMIT=16\nSERVER_THREADS=32\n")),
    Refusal("approaches-none-combined", "settings.parse_approaches#1", "request-settings",
            env_add("PROXY_APPROACHES=moa&none\n")),
    Refusal("approaches-plugin-not-enabled", "settings.parse_approaches#2", "request-settings",
            env_add("PROXY_APPROACHES=moa,genselect\n")),
    Refusal("approaches-unknown", "settings.parse_approaches#3", "request-settings",
            env_add("PROXY_APPROACHES=moa,mao\n")),
    Refusal("approaches-mixed-combination", "settings.parse_approaches#4", "request-settings",
            env_add("PROXY_APPROACHES=moa&bon|plansearch\n")),
    # the two keys
    Refusal("proxy-key-not-loaded", "settings.read_credential#2", "key-not-loaded", unload("api-key")),
    Refusal("litellm-key-not-loaded", "settings.read_credential#2", "key-not-loaded", unload("upstream-key")),
    Refusal("no-credential-loaded", "settings.read_credential#1", "key-not-loaded",
            lambda d: (unload("api-key")(d), unload("upstream-key")(d))),
    Refusal("proxy-key-empty", "settings.check_key_text#1", "key-too-short", write("key", "\n")),
    Refusal("proxy-key-two-words", "settings.check_key_text#2", "key-too-short",
            write("key", "opx-" + "a" * 43 + " b\n")),
    Refusal("proxy-key-sk", "settings.check_proxy_key#1", "key-sk-prefix", write("key", "sk-" + "a" * 43 + "\n")),
    Refusal("litellm-key-empty", "settings.check_key_text#1", "openai-key-missing", write("upstream", " \n")),
    Refusal("litellm-key-two-lines", "settings.check_key_text#2", "openai-key-missing",
            write("upstream", "sk-one\nsk-two\n")),
    Refusal("litellm-key-placeholder", "settings.check_upstream_key#1", "openai-key-missing",
            write("upstream", settings.UPSTREAM_KEY_PLACEHOLDER + "\n")),
]

# Refusals no file lint reads can show, and what shows them instead.
NOT_LINTABLE = {
    "settings.read_credential#3": "a credential systemd delivered but the launcher cannot read: systemd "
                                  "copies the file itself (an unreadable source fails the start with 243/CREDENTIALS)",
    "serving.adopt_socket#1": "an unusable inherited fd (systemd passes what it bound itself)",
    "serving.adopt_socket#2": "an inherited fd that is not a listening TCP socket: ListenStream= is TCP, "
                              "socket-address checks its address",
    "settings._credential#1": "a key file a reload did not hand over: the reload helper reads both files or "
                              "refuses before it asks (file-missing and key-not-loaded report them on disk)",
    "reload.take_handoff#1": "a --handoff-fd value only a running launcher passes (a reload), never the unit",
    "reload.take_handoff#2": "what a running launcher hands its successor over a pipe during a reload",
    "serving.make_run.take_over#1": "the new launcher's own /health, in-process, during a reload: only a "
                                    "started app shows it",
    "patches.check_version#1": "optillm's __version__ as imported; lint's optillm-version calls this same check "
                               "on the installed METADATA (test_launcher_checks)",
    "patches.verify_source#1": "server.py unreadable to the launcher; lint's file checks run as another user",
    "patches.verify_source#2": "changed optillm internals: lint's optillm-internals calls this same function "
                               "(test_launcher_checks, real-marked against the real server.py)",
    "patches.verify_module#1": "names of the imported optillm.server module",
    "patches.verify_module#2": "known_approaches of the imported optillm.server module",
    "routes.verify#1": "the imported optillm app's url_map: only importing optillm shows it (`opsctl runtime "
                       "check` runs the launcher with --check, which verifies it)",
    "routes.verify#2": "the imported optillm app's chat view: only importing optillm shows it (--check verifies it)",
    "routes.verify#3": "the imported optillm app's before_request hooks: only importing optillm shows them "
                       "(--check verifies them)",
    "plugins.make_subset_loader.load_plugins#1": "an enabled plugin's import failing: only importing it shows it "
                                    "(`opsctl runtime check` runs the launcher with --check)",
    "plugins.make_subset_loader.load_plugins#2": "a plugin file without SLUG/run(): only importing it shows it",
    "main.check_and_exit#1": "a plugin that fails to import under `all`: only importing it shows it",
}


def refusal_sites() -> dict[str, tuple[str, int, int]]:
    """site -> (file, first line, last line) of every refusal in the launcher's source: a `raise`
    of ConfigRefused (or of a helper returning one), or `refuse(...)` with its own message."""
    makers = {"ConfigRefused", "credential_not_loaded", "credential_missing"}
    sites: dict[str, tuple[str, int, int]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        module = path.stem

        def visit(node, scope: list[str]) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                    visit(child, scope + [child.name])
                    continue
                call = None
                if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                    call = child.exc
                elif isinstance(child, ast.Expr) and isinstance(child.value, ast.Call) \
                        and getattr(child.value.func, "id", None) == "refuse":
                    args = child.value.args
                    if not (args and isinstance(args[0], ast.Call) and getattr(args[0].func, "id", None) == "str"):
                        call = child.value
                if call is not None and (getattr(call.func, "id", None) in makers | {"refuse"}):
                    name = f"{module}.{'.'.join(scope)}"
                    n = sum(1 for s in sites if s.rsplit("#", 1)[0] == name) + 1
                    sites[f"{name}#{n}"] = (str(path), child.lineno, child.end_lineno)
                visit(child, scope)

        visit(tree, [])
    return sites


SITES = refusal_sites()


def test_every_refusal_site_is_accounted_for():
    covered = {case.site for case in CASES}
    assert covered <= set(SITES), f"cases name sites that do not exist: {covered - set(SITES)}"
    assert not covered & set(NOT_LINTABLE), "a site is both reached by a case and listed as not lintable"
    missing = set(SITES) - covered - set(NOT_LINTABLE)
    assert not missing, (f"launcher refusals without a lint case (add a Refusal, with a rule that calls "
                         f"the launcher's check) or a NOT_LINTABLE reason: {sorted(missing)}")
    assert not set(NOT_LINTABLE) - set(SITES), f"stale NOT_LINTABLE: {set(NOT_LINTABLE) - set(SITES)}"


# --- the launcher on the deployment's files -----------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    environ: dict[str, str]
    launcher: Path
    listen: list[tuple[str, int]]  # what systemd binds for the socket unit (ListenStream=HOST:PORT)


def launcher_inputs(d: Deployment, tmp: Path) -> Run:
    """What systemd would hand the launcher for this deployment's unit. The corpus's port (4020,
    the deployed one) moves to a free port first, in the unit and the socket unit alike: the
    sockets are bound for real, and 4020 may be a box's."""
    port = free_port()
    for kind, old in (("unit", "--port 4020"), ("socket", "ListenStream=127.0.0.1:4020")):
        text = d.path(kind).read_text()
        d.write(kind, text.replace(old, old.replace("4020", str(port))))
    ctx = Context(d.inputs(), process_env={})
    es = ctx.exec_start
    words = split_words(es.directive.value)
    argv = words[words.index(es.command.script) + 1:]
    environ = {"PATH": "/usr/bin:/bin"}
    for directive in ctx.unit.effective("Service", "Environment"):
        environ.update(environment_assignments(directive.value) or ())
    environ.update(parse_env_file(d.env_file.read_text()).as_dict())
    loaded = [directive.value.split(":", 1)[0] for directive in ctx.unit.effective("Service", "LoadCredential")]
    sources = {settings.CREDENTIAL_NAME: d.key_file, settings.UPSTREAM_CREDENTIAL_NAME: d.upstream_key_file}
    if set(loaded) == set(sources):
        # The key files are named like their credentials: the launcher reads the very files lint
        # reads, so messages naming the file agree.
        environ["CREDENTIALS_DIRECTORY"] = str(d.key_file.parent)
    elif loaded:
        creds = tmp / "credentials"
        creds.mkdir()
        for name in loaded:
            shutil.copy(sources[name], creds / name)
        environ["CREDENTIALS_DIRECTORY"] = str(creds)
    listen = []
    for directive in ctx.socket_unit.effective("Socket", "ListenStream"):
        host, _, port = directive.value.rpartition(":")
        listen.append((host, int(port)))
    # The launcher in the deployment's runtime, so it reads that runtime's manifest and table.
    libexec = d.venv / "libexec"
    shutil.copy2(LAUNCHER_DIR / "optillm-proxy-launcher.py", libexec)
    shutil.copytree(PACKAGE, libexec / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    return Run(argv, environ, libexec / "optillm-proxy-launcher.py", listen)


# Binds the sockets, puts them on fd 3.. with LISTEN_FDS/LISTEN_PID (sd_listen_fds), then either
# runs the launcher's checks in order (as main() does before importing optillm) and prints the
# refusal with its traceback, or execs the launcher (the pid stays: LISTEN_PID stays true).
ACTIVATE = """
import json, os, socket, sys, traceback
spec = json.loads(sys.argv[1])
socks = [socket.create_server((host, port)) for host, port in spec["listen"]]
for i, sock in enumerate(socks):
    if sock.fileno() != 3 + i:
        os.dup2(sock.fileno(), 3 + i)
    os.set_inheritable(3 + i, True)
env = dict(spec["environ"])
if socks:
    env.update(LISTEN_FDS=str(len(socks)), LISTEN_PID=str(os.getpid()))
if spec["mode"] == "exec":
    os.execve(spec["python"], [spec["python"], "-I", spec["launcher"], *spec["argv"], "--check"], env)
sys.path.insert(0, os.path.dirname(spec["launcher"]))
from optillm_proxy_launcher import serving, settings
try:
    prepared = settings.prepare(spec["argv"], env)  # the copy's own table and manifest, as main() has them
    host, port = settings.listen_address(prepared.argv)
    serving.inherited_socket(env, os.getpid(), host, port)
except settings.ConfigRefused as exc:
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]
    print(json.dumps({"message": str(exc), "frames": frames}))
else:
    print(json.dumps({"message": None, "frames": []}))
"""


def activated(run: Run, mode: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    spec = {"mode": mode, "python": python, "launcher": str(run.launcher), "argv": run.argv,
            "environ": run.environ, "listen": run.listen}
    return subprocess.run([python, "-I", "-c", ACTIVATE, json.dumps(spec)], env=run.environ,
                          capture_output=True, text=True, timeout=300, cwd=run.launcher.parent)


def checks(run: Run) -> tuple[str, str]:
    """(site, message) of the refusal, from the launcher's checks as main() runs them: in this
    process, or with sockets to pass in a process that holds them as systemd would."""
    if run.listen:
        done = activated(run, "checks")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    else:
        import os
        import traceback

        from optillm_proxy_launcher import serving

        environ = dict(run.environ)
        try:
            prepared = settings.prepare(run.argv, environ, table_path=run.launcher.parent / "plugins.json",
                                        manifest_path=run.launcher.parent.parent / "optillm-proxy-runtime.json")
            host, port = settings.listen_address(prepared.argv)
            serving.inherited_socket(environ, os.getpid(), host, port)
        except settings.ConfigRefused as exc:
            frames = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]
            result = {"message": str(exc), "frames": frames}
        else:
            result = {"message": None}
    assert result["message"], "the launcher's checks accepted this deployment"
    return site_of(result["frames"]), result["message"]


def site_of(frames: list[tuple[str, int]]) -> str:
    """The refusal site holding the innermost launcher frame (the copy has the source's lines)."""
    for filename, line in reversed(frames):
        for site, (path, first, last) in SITES.items():
            if Path(filename).name == Path(path).name and Path(filename).parent.name == PACKAGE.name \
                    and first <= line <= last:
                return site
    return f"<no site: {frames[-1:]}>"  # a refusal outside the enumerated sites


def refused_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == settings.EX_CONFIG, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED_PREFIX), done.stderr
    assert done.stdout == ""
    return lines[0][len(REFUSED_PREFIX):]


def lint_message(d: Deployment, rule: str, expected: str) -> None:
    findings = d.lint()
    rendered = "\n".join(f.render() for f in findings)
    hits = [f for f in findings if f.rule == rule]
    assert hits, f"lint did not report {rule}:\n{rendered}"
    assert REFUSES + expected in [f.message for f in hits], \
        f"no {rule} finding with the launcher's text\n  launcher: {expected}\n  lint:\n{rendered}"
    assert all(f.severity == "error" for f in hits)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refusal_is_the_lint_error(deployment, tmp_path, case: Refusal):
    """The launcher's checks refuse at the case's site; lint says the same. (The launcher as a
    process, exit 78, one line: the real tier below, with the real runtime.)"""
    case.break_it(deployment)
    run = launcher_inputs(deployment, tmp_path)
    site, message = checks(run)
    assert site == case.site, f"refused at {site}, not {case.site}: {message}"
    lint_message(deployment, case.rule, message)


@pytest.mark.real
def test_real_launcher_accepts_the_unbroken_deployment(deployment, tmp_path, lean_runtime):
    assert deployment.lint() == []
    run = launcher_inputs(deployment, tmp_path)
    done = activated(run, "exec", str(lean_runtime / "bin" / "python"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "optillm-proxy-launcher: configuration accepted (1 plugin(s)" in done.stdout


@pytest.mark.real
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_real_launcher_refuses_with_the_lint_text(deployment, tmp_path, lean_runtime, case: Refusal):
    case.break_it(deployment)
    run = launcher_inputs(deployment, tmp_path)
    message = refused_line(activated(run, "exec", str(lean_runtime / "bin" / "python")))
    lint_message(deployment, case.rule, message)
