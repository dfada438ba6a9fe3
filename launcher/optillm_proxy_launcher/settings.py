"""Configuration checks: everything the launcher refuses to start on, before optillm is imported.

Stdlib only, so `opsctl lint` imports this same module and a lint error and an exit 78 come from
one implementation. Each check raises ConfigRefused; str() is the one line the operator reads.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from optillm_proxy_launcher import layout, manifest

EX_CONFIG = 78
LIBEXEC = Path(__file__).resolve().parent.parent
PLUGIN_TABLE = LIBEXEC / "plugins.json"
# libexec/.. is the runtime root; install.sh writes the manifest there.
RUNTIME_MANIFEST = manifest.path_of(LIBEXEC.parent)
DEFAULT_PROFILE = "full"  # a runtime without a manifest is a stock venv: it can import everything
CREDENTIAL_NAME = "api-key"
KEY_FILE_HINT = layout.KEY_FILE
PROXY_KEY_WHAT = "proxy key"  # how refusals name each key
UPSTREAM_CREDENTIAL_NAME = "upstream-key"
UPSTREAM_KEY_FILE_HINT = layout.UPSTREAM_KEY_FILE
UPSTREAM_KEY_WHAT = "LiteLLM key"
ENV_FILE_HINT = layout.ENV_FILE
# Where stock optillm (and the proxy plugin's provider file) look for the LiteLLM key.
UPSTREAM_KEY_VARIABLE = "OPENAI_API_KEY"
# What the first install of an earlier version wrote into the env file.
UPSTREAM_KEY_PLACEHOLDER = "replace-with-the-litellm-key"
# The prefixes the gateway routes; all are optillm core approaches, loaded without any plugin.
ROUTED_STRATEGIES = layout.STRATEGY_PREFIXES
# optillm 0.3.12 server.known_approaches ("none" is the pass-through); patches.py verifies it.
CORE_APPROACHES = ("mcts", "bon", "moa", "rto", "z3", "self_consistency", "pvg", "rstar",
                   "cot_reflection", "plansearch", "leap", "re2", "cepo", "mars")
# optillm 0.3.12's --host and --port defaults (server.py parse_args).
OPTILLM_DEFAULT_HOST, OPTILLM_DEFAULT_PORT = "127.0.0.1", 8000
# Provider keys that make stock get_config() pick another client; the launcher's upstream client
# only speaks to LiteLLM with OPENAI_API_KEY, so one of these would be silently ignored.
OTHER_PROVIDER_KEYS = ("CEREBRAS_API_KEY", "AZURE_OPENAI_API_KEY")


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


def take_flag(argv: list[str], name: str) -> tuple[bool, list[str]]:
    """Remove our own flag `name` (exact match, like take_option) from argv."""
    rest = [arg for arg in argv if arg != name]
    return len(rest) != len(argv), rest


def _matches_option(arg: str, option: str) -> tuple[bool, str | None]:
    """Does argv token `arg` select optillm's `option`, argparse abbreviations included?"""
    if not arg.startswith("--") or len(arg) < 3:
        return False, None
    name, eq, inline = arg.partition("=")
    if len(name) > 2 and option.startswith(name):
        return True, inline if eq else None
    return False, None


def option_values(argv: list[str], *options: str) -> list[str | None]:
    """Values given to any of `options` (aliases of one flag), in command-line order."""
    values = []
    for i, arg in enumerate(argv):
        for option in options:
            hit, inline = _matches_option(arg, option)
            if hit:
                values.append(inline if inline is not None else (argv[i + 1] if i + 1 < len(argv) else None))
                break
    return values


def option_value(argv: list[str], option: str, default: str, *aliases: str) -> str:
    values = [v for v in option_values(argv, option, *aliases) if v is not None]
    return values[-1] if values else default


def check_key_not_on_command_line(argv: list[str]) -> None:
    if option_values(argv, "--optillm-api-key"):
        raise ConfigRefused(
            "--optillm-api-key is on the command line, where every local user can read it: remove it and "
            f"rotate the key; the launcher reads the key from the systemd credential {CREDENTIAL_NAME} "
            f"({KEY_FILE_HINT})")


def check_approach_value(value: str | None) -> None:
    """One --approach value: 'proxy' and 'auto' are refused, any other is optillm's to judge."""
    if value in ("proxy", "auto"):
        raise ConfigRefused(
            f"--approach {value} is on the command line: remove it; "
            + ("'proxy' makes optillm skip every prefix strategy (moa-, bon-, ...)" if value == "proxy"
               else "0.3.12 rejects 'auto'; prefix selection works only with --approach left out"))


def check_base_url(argv: list[str]) -> None:
    if not base_url(argv):
        raise ConfigRefused("--base-url is missing or empty: the upstream client needs LiteLLM's URL, "
                            f"e.g. --base-url {layout.UPSTREAM_URL} in the unit's ExecStart")


def check_command_line(argv: list[str]) -> None:
    """optillm's flags (ours taken out): each check is its own function, which `opsctl lint` calls."""
    check_key_not_on_command_line(argv)
    for value in option_values(argv, "--approach"):
        check_approach_value(value)
    check_base_url(argv)


def listen_address(argv: list[str]) -> tuple[str, int]:
    """--host and --port as optillm will bind them (its defaults when absent)."""
    host = option_value(argv, "--host", OPTILLM_DEFAULT_HOST)
    raw = option_value(argv, "--port", str(OPTILLM_DEFAULT_PORT))
    try:
        return host, int(raw)
    except ValueError:
        raise ConfigRefused(f"--port {raw!r} is not a number: give ExecStart the port optillm-proxy.socket "
                            "listens on, e.g. --port 4020") from None


def check_socket_count(fds: str) -> None:
    """LISTEN_FDS as systemd passes it: one socket, optillm-proxy.socket's one ListenStream=."""
    if fds != "1":
        raise ConfigRefused(f"systemd passed {fds} sockets (LISTEN_FDS): optillm-proxy.socket must have exactly "
                            "one ListenStream=")


def check_socket_address(bound: tuple[str, int], host: str, port: int) -> None:
    """The address the passed socket is bound to (getsockname) against --host/--port."""
    bound_host, bound_port = bound
    if (bound_host, bound_port) != (host, port):
        raise ConfigRefused(f"optillm-proxy.socket listens on {bound_host}:{bound_port} but ExecStart says --host "
                            f"{host} --port {port}: make them the same address (an explicit IPv4 address in "
                            "ListenStream=, not a bare port, which is IPv6 dual-stack)")


def base_url(argv: list[str]) -> str:
    return option_value(argv, "--base-url", "", "--base_url").strip()


def check_environment(environ: Mapping[str, str]) -> None:
    if "OPTILLM_API_KEY" in environ:
        raise ConfigRefused(
            f"OPTILLM_API_KEY is set in the environment, which switches optillm {layout.OPTILLM_VERSION} to local inference: "
            f"remove it from {ENV_FILE_HINT}; the proxy key belongs in {KEY_FILE_HINT}")
    stray = sorted(k for k in environ if k.startswith("OPTILLM_"))
    if stray:
        raise ConfigRefused(
            f"{', '.join(stray)} set in the environment: optillm reads OPTILLM_* as flag defaults, which would "
            f"silently change the unit's ExecStart flags; remove it from {ENV_FILE_HINT}")
    if UPSTREAM_KEY_VARIABLE in environ:
        raise ConfigRefused(
            f"{UPSTREAM_KEY_VARIABLE} is set in the environment, where /proc/PID/environ shows it: the env file "
            f"holds no secret; move the key to {UPSTREAM_KEY_FILE_HINT} (install.sh moves it for you)")
    other = [k for k in OTHER_PROVIDER_KEYS if environ.get(k)]
    if other:
        raise ConfigRefused(
            f"{', '.join(other)} set in the environment: this proxy calls only LiteLLM, with "
            f"{UPSTREAM_KEY_VARIABLE}; remove it from {ENV_FILE_HINT}")


# ---------------------------------------------------------------------------------------------
# The two keys, each a systemd credential ($CREDENTIALS_DIRECTORY/NAME)


def load_credential_hint(name: str, hint: str) -> str:
    return f"give the unit LoadCredential={name}:{hint}"


def credential_not_loaded(name: str, hint: str, what: str) -> ConfigRefused:
    """No $CREDENTIALS_DIRECTORY/NAME: the unit has no LoadCredential= for it (a LoadCredential=
    whose source file is missing fails the start in systemd itself, before the launcher runs)."""
    return ConfigRefused(f"no {what}: the credential {name} is not loaded (no $CREDENTIALS_DIRECTORY/{name}); "
                         f"{load_credential_hint(name, hint)}")


def credential_missing(path: Path | str, name: str, hint: str, what: str) -> ConfigRefused:
    """What systemd's refusal (status 243/CREDENTIALS) means when the key file `path` itself is
    missing: lint says it in the launcher's words."""
    return ConfigRefused(f"no {what}: {path} does not exist; write it to {hint} (one line, root 0600) "
                         f"and {load_credential_hint(name, hint)}")


def check_key_text(text: str, path: Path | str, hint: str, what: str) -> str:
    """The key in a credential's text, stripped; refuses an empty or multi-word one.

    `path` is where the text was read: $CREDENTIALS_DIRECTORY/NAME for the launcher, the key file
    itself for `opsctl lint` (which calls this on the file's text, without systemd)."""
    key = text.strip()
    if not key:
        raise ConfigRefused(f"the {what} credential {path} is empty: write the key to {hint} (one line)")
    if any(c.isspace() for c in key):
        raise ConfigRefused(f"the {what} in {hint} must be one line without spaces")
    return key


def read_credential(environ: Mapping[str, str], name: str, hint: str, what: str) -> str:
    """One line from the credential `name`; refuses a missing, empty or multi-word one."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    how = load_credential_hint(name, hint)
    if not directory:
        raise credential_not_loaded(name, hint, what)
    path = Path(directory) / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise credential_not_loaded(name, hint, what) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigRefused(f"cannot read the {what} {path}: {exc.__class__.__name__}; {how}") from None
    return check_key_text(text, path, hint, what)


def check_upstream_key(key: str) -> str:
    """Refuses the placeholder an earlier install wrote; `key` as check_key_text returns it."""
    if key == UPSTREAM_KEY_PLACEHOLDER:
        raise ConfigRefused(f"{UPSTREAM_KEY_FILE_HINT} still holds the placeholder {UPSTREAM_KEY_PLACEHOLDER}: "
                            "write the LiteLLM key the proxy calls LiteLLM with")
    return key


def check_proxy_key(key: str) -> str:
    """Refuses an sk- proxy key; `key` as check_key_text returns it."""
    if key.startswith("sk-"):
        raise ConfigRefused(
            f"the proxy key in {KEY_FILE_HINT} starts with sk-, which optillm {layout.OPTILLM_VERSION} forwards upstream as the "
            "provider key: generate a new one (e.g. opx- + random base64url)")
    return key


def _credential(environ: Mapping[str, str], name: str, hint: str, what: str,
                given: Mapping[str, str] | None) -> str:
    """The credential from $CREDENTIALS_DIRECTORY, or from `given` (name -> the key file's text, as
    a reload hands it over: reload.py), through the same checks."""
    if given is None:
        return read_credential(environ, name, hint, what)
    if name not in given:
        raise ConfigRefused(f"no {what}: {hint} was not handed over with the reload; write it (one line, root 0600)")
    return check_key_text(given[name], hint, hint, what)


def upstream_key(environ: Mapping[str, str], given: Mapping[str, str] | None = None) -> str:
    return check_upstream_key(
        _credential(environ, UPSTREAM_CREDENTIAL_NAME, UPSTREAM_KEY_FILE_HINT, UPSTREAM_KEY_WHAT, given))


def read_api_key(environ: Mapping[str, str], given: Mapping[str, str] | None = None) -> str:
    return check_proxy_key(_credential(environ, CREDENTIAL_NAME, KEY_FILE_HINT, PROXY_KEY_WHAT, given))


# ---------------------------------------------------------------------------------------------
# Which plugins load


def load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigRefused(f"{what} {path} is missing: reinstall the runtime") from None
    except (OSError, ValueError) as exc:
        raise ConfigRefused(f"{what} {path} is unreadable ({exc.__class__.__name__}): reinstall the runtime") from None


def runtime_profile(path: Path = RUNTIME_MANIFEST) -> str:
    try:
        profile = manifest.read(path).get("profile")
    except manifest.ManifestProblem as exc:
        if exc.missing:
            return DEFAULT_PROFILE
        raise ConfigRefused(f"runtime manifest {path} is unreadable ({exc}): reinstall the runtime") from None
    if not isinstance(profile, str) or not profile:
        raise ConfigRefused(f"runtime manifest {path} names no profile: reinstall the runtime")
    return profile


def runtime_python(path: Path = RUNTIME_MANIFEST) -> str:
    """X.Y of the runtime's Python: the manifest's (install.sh records it), else this interpreter's."""
    try:
        recorded = manifest.read(path).get("python")
    except manifest.ManifestProblem:
        recorded = None  # runtime_profile says why an unreadable manifest is refused
    return recorded if isinstance(recorded, str) and recorded else "%d.%d" % sys.version_info[:2]


def plugin_pythons(path: Path = PLUGIN_TABLE) -> dict[str, dict]:
    """The plugin table's "pythons" section (tools/derive_locks.py): profiles per Python, and why
    one cannot be built there."""
    pythons = load_json(path, "plugin table").get("pythons")
    return pythons if isinstance(pythons, dict) else {}


def plugin_table(path: Path = PLUGIN_TABLE) -> dict[str, dict]:
    table = load_json(path, "plugin table").get("plugins")
    if not isinstance(table, dict) or not table:
        raise ConfigRefused(f"plugin table {path} lists no plugins: reinstall the runtime")
    return table


def parse_plugin_setting(setting: str, table: Mapping[str, dict]) -> str | list[str]:
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


def enabled_slugs(enabled: str | list[str], table: Mapping[str, dict]) -> list[str]:
    return sorted(table) if enabled == "all" else list(enabled)


def check_profile(enabled: str | list[str], table: Mapping[str, dict], profile: str,
                  python: str | None = None, pythons: Mapping[str, dict] | None = None) -> None:
    """Refuse plugins the runtime's profile cannot import; where the full profile cannot be built
    for the runtime's Python (`pythons`, from the plugin table), say so instead of suggesting it."""
    missing = [s for s in enabled_slugs(enabled, table) if profile not in table[s].get("profiles", [])]
    if not missing:
        return
    loadable = sorted(s for s in table if profile in table[s].get("profiles", []))
    subset = f"set PROXY_PLUGINS to a subset of: {', '.join(loadable) or 'none'}"
    no_full = ((pythons or {}).get(python) or {}).get("full_unavailable") if python else None
    remedy = (f"there is no full profile for Python {python} ({no_full}); {subset}" if no_full
              else f"install the full profile or {subset}")
    raise ConfigRefused(
        f"plugin(s) {', '.join(missing)} cannot be imported by this runtime's '{profile}' profile: {remedy}")


# ---------------------------------------------------------------------------------------------
# The request path: bounds and the approach allow-list (env file settings)


@dataclass(frozen=True)
class Bound:
    """One numeric env-file setting: its default, its range, and why the default is what it is."""

    name: str
    kind: type
    default: float
    low: float
    high: float
    why: str

    @property
    def range(self) -> str:
        return f"{_number(self.low)}..{_number(self.high)}"

    def parse(self, environ: Mapping[str, str]) -> float:
        raw = environ.get(self.name)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = self.kind(raw.strip())
        except ValueError:
            raise ConfigRefused(f"{self.name}={raw!r} is not a{'n integer' if self.kind is int else ' number'}: "
                                f"set {self.range} in {ENV_FILE_HINT} "
                                f"(or remove the line for the default {_number(self.default)})") from None
        if not (self.low <= value <= self.high):
            raise ConfigRefused(f"{self.name}={raw.strip()} is out of range: set {self.range} in "
                                f"{ENV_FILE_HINT} (or remove the line for the default {_number(self.default)})")
        return value


def _number(value: float) -> str:
    """4194304, not 4.1943e+06: operators copy these into the env file."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


REQUEST_BOUNDS = (
    Bound("UPSTREAM_TIMEOUT_SECONDS", float, 120, 1, 3600,
          "one upstream call (LiteLLM on loopback); long enough for a long completion, short enough "
          "that a hung LiteLLM is noticed well before the request deadline"),
    Bound("UPSTREAM_RETRIES", int, 1, 0, 5,
          "extra attempts after a refused connection, 429 or 5xx; LiteLLM already retries its own "
          "deployments, so one retry covers a LiteLLM restart without multiplying the fan-out"),
    Bound("REQUEST_DEADLINE_SECONDS", float, 300, 1, 3600,
          "one whole client request, all its upstream calls included; after it no new upstream call "
          "starts and the client gets 504. Keep it below LiteLLM's own timeout for the route"),
    Bound("MAX_REQUEST_BYTES", int, 4 * 1024 * 1024, 1024, 64 * 1024 * 1024,
          "request body size; 4 MiB holds a prompt of about a million characters; larger gets 413"),
    Bound("MAX_N", int, 4, 1, 128,
          "the `n` a client may ask for; a strategy runs its whole pipeline n times"),
    Bound("DRAIN_SECONDS", float, 300, 0, 3600,
          "on stop (restart, upgrade) requests in flight may finish this long while new connections wait "
          "in the socket's backlog; after a reload the old process drains as long while the new one serves; "
          "as long as the default deadline, so none is cut"),
)
# Serving (serving.py, admission.py): docs/serving.md shows them and says how to size them.
SERVING_BOUNDS = (
    Bound("SERVER_THREADS", int, 64, 4, 256,
          "requests run at once (one thread each); all but two may be chat completions, so /health "
          "and /metrics always find a thread; more requests wait, already read, in the server's queue"),
    Bound("CONNECTION_LIMIT", int, 1024, 16, 4096,
          "client connections open at once (each a descriptor and a small buffer); past it the server "
          "stops accepting and new connections wait in the socket's backlog, never refused; as large as "
          "the backlog, so idle connections alone cannot make real requests wait"),
    Bound("CLIENT_TIMEOUT_SECONDS", int, 20, 5, 25,
          "a connection that sends nothing this long (an unfinished request, an idle keep-alive) is "
          "closed; checked every 5 s, so one is gone within this plus 5 s (30 s at most)"),
    Bound("ADMIT_BODY_BYTES", int, 32 * 1024 * 1024, 1024, 1024 * 1024 * 1024,
          "request bytes (Content-Length) in the app at once; past it a request gets 503 with "
          "Retry-After. Sized so the largest admitted load stays under the unit's MemoryHigh "
          "(bench/memory_per_byte.py); at least MAX_REQUEST_BYTES"),
)
BOUNDS = REQUEST_BOUNDS + SERVING_BOUNDS
# Threads kept for requests that are not chat completions (/health feeds the watchdog).
RESERVED_THREADS = 2
APPROACHES_VARIABLE = "PROXY_APPROACHES"
RECORDS_VARIABLE = "PROXY_RECORDS"
RECORDS_CHOICES = ("journal", "off")  # one structured record per request, or none


def parse_records(raw: str | None) -> str:
    value = (raw or "").strip().lower() or RECORDS_CHOICES[0]
    if value not in RECORDS_CHOICES:
        raise ConfigRefused(f"{RECORDS_VARIABLE}={raw!r}: set journal (one record per request, the default) "
                            f"or off in {ENV_FILE_HINT}")
    return value


USAGE_VARIABLE = "PROXY_USAGE"
# upstream: an answer's usage is what its upstream calls spent, summed (usage.py); stock: optillm's own.
USAGE_CHOICES = ("upstream", "stock")


def parse_usage(raw: str | None) -> str:
    value = (raw or "").strip().lower() or USAGE_CHOICES[0]
    if value not in USAGE_CHOICES:
        raise ConfigRefused(f"{USAGE_VARIABLE}={raw!r}: set upstream (an answer's usage is what its upstream calls "
                            f"spent, the default) or stock (optillm's own figure) in {ENV_FILE_HINT}")
    return value


@dataclass(frozen=True)
class RequestSettings:
    upstream_timeout: float
    upstream_retries: int
    deadline: float
    max_request_bytes: int
    max_n: int
    drain: float
    approaches: frozenset[str]  # allowed prefixes; combined ones as written (`moa&bon`)
    records: str = RECORDS_CHOICES[0]
    usage: str = USAGE_CHOICES[0]
    threads: int = 64
    connection_limit: int = 1024
    client_timeout: int = 20
    admit_body_bytes: int = 32 * 1024 * 1024

    @property
    def admit_requests(self) -> int:
        """Chat completions (any request with a body) in the app at once."""
        return self.threads - RESERVED_THREADS


def default_approaches(plugins: list[str]) -> list[str]:
    return [*ROUTED_STRATEGIES, *plugins]


def parse_approaches(raw: str | None, plugins: list[str], table: Mapping[str, dict]) -> frozenset[str]:
    """PROXY_APPROACHES: a comma list of core approaches, enabled plugin slugs and combined forms
    (`a&b`, `a|b`) of those; `none` allows the base model only. Unset: the routed four + plugins."""
    if raw is None or not raw.strip():
        return frozenset(default_approaches(plugins))
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if names == ["none"]:
        return frozenset()
    allowed = set()
    for name in names:
        parts = name.replace("|", "&").split("&")
        for part in parts:
            if part == "none":
                raise ConfigRefused(f"{APPROACHES_VARIABLE}: 'none' cannot be combined with approaches "
                                    "(the base model always passes through; set none alone to allow only it)")
            if part in table and part not in plugins:
                raise ConfigRefused(f"{APPROACHES_VARIABLE} names plugin '{part}', which PROXY_PLUGINS does not "
                                    f"enable: add it to PROXY_PLUGINS or remove it from {APPROACHES_VARIABLE}")
            if part not in CORE_APPROACHES and part not in table:
                raise ConfigRefused(f"{APPROACHES_VARIABLE} names unknown approach '{part}': core approaches are "
                                    f"{', '.join(CORE_APPROACHES)}; plugins are the slugs PROXY_PLUGINS enables")
        if ("&" in name and "|" in name) or (len(parts) > 1 and len(set(parts)) != len(parts)):
            raise ConfigRefused(f"{APPROACHES_VARIABLE}: combined approach '{name}' must join distinct "
                                "approaches with only & or only |")
        allowed.add(name)
    return frozenset(allowed)


def request_settings(environ: Mapping[str, str], plugins: list[str],
                     table: Mapping[str, dict]) -> RequestSettings:
    values = {b.name: b.parse(environ) for b in BOUNDS}
    check_admission(values)
    return RequestSettings(
        upstream_timeout=values["UPSTREAM_TIMEOUT_SECONDS"],
        upstream_retries=int(values["UPSTREAM_RETRIES"]),
        deadline=values["REQUEST_DEADLINE_SECONDS"],
        max_request_bytes=int(values["MAX_REQUEST_BYTES"]),
        max_n=int(values["MAX_N"]),
        drain=values["DRAIN_SECONDS"],
        approaches=parse_approaches(environ.get(APPROACHES_VARIABLE), plugins, table),
        records=parse_records(environ.get(RECORDS_VARIABLE)),
        usage=parse_usage(environ.get(USAGE_VARIABLE)),
        threads=int(values["SERVER_THREADS"]),
        connection_limit=int(values["CONNECTION_LIMIT"]),
        client_timeout=int(values["CLIENT_TIMEOUT_SECONDS"]),
        admit_body_bytes=int(values["ADMIT_BODY_BYTES"]),
    )


def check_admission(values: Mapping[str, float]) -> None:
    """Bounds that only make sense together: a request of the largest size must be admissible, and
    the server must accept at least as many connections as it runs requests."""
    if values["ADMIT_BODY_BYTES"] < values["MAX_REQUEST_BYTES"]:
        raise ConfigRefused(f"ADMIT_BODY_BYTES={_number(values['ADMIT_BODY_BYTES'])} is below MAX_REQUEST_BYTES="
                            f"{_number(values['MAX_REQUEST_BYTES'])}: a request of the largest size could never "
                            f"run; raise ADMIT_BODY_BYTES or lower MAX_REQUEST_BYTES in {ENV_FILE_HINT}")
    if values["CONNECTION_LIMIT"] < values["SERVER_THREADS"]:
        raise ConfigRefused(f"CONNECTION_LIMIT={_number(values['CONNECTION_LIMIT'])} is below SERVER_THREADS="
                            f"{_number(values['SERVER_THREADS'])}: threads could never all be used; raise "
                            f"CONNECTION_LIMIT or lower SERVER_THREADS in {ENV_FILE_HINT}")


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    argv: list[str]  # optillm's flags, our --plugins and --check taken out
    enabled: str | list[str]
    table: dict[str, dict]
    key: str
    upstream_key: str
    upstream_url: str
    request: RequestSettings
    check_only: bool = False  # --check: run every check, load the plugins, serve nothing


def prepare(argv: list[str], environ: Mapping[str, str], *, table_path: Path = PLUGIN_TABLE,
            manifest_path: Path = RUNTIME_MANIFEST, credentials: Mapping[str, str] | None = None) -> Prepared:
    """Every check that needs no optillm import, so a refusal is fast and has no side effect.
    `credentials` (name -> text) replaces $CREDENTIALS_DIRECTORY: what a reload hands over."""
    check_only, argv = take_flag(argv, "--check")
    setting, argv = take_option(argv, "--plugins")
    if setting is None:
        setting = environ.get("PROXY_PLUGINS", "none")
    check_environment(environ)
    check_command_line(argv)
    table = plugin_table(table_path)
    enabled = parse_plugin_setting(setting, table)
    check_profile(enabled, table, runtime_profile(manifest_path), runtime_python(manifest_path),
                  plugin_pythons(table_path))
    request = request_settings(environ, enabled_slugs(enabled, table), table)
    key = read_api_key(environ, credentials)
    upstream = upstream_key(environ, credentials)
    return Prepared(argv, enabled, table, key, upstream, base_url(argv), request, check_only)
