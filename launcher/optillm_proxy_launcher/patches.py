"""The documented points where the launcher changes optillm in memory, and their verification.

optillm's files are never edited. Each point relies on what the pinned optillm (layout.env
OPTILLM_VERSION) does, read from its source, and on a few things around it: POINTS lists every
dependency of each point (the table below says why), FINGERPRINTS what each must read as, per
optillm version (internals.py reads them from a tree's files; tools/audit_optillm.py prints them
for another release). At start verify_module() refuses (exit 78, one line) unless the installed
optillm is the pinned version and every dependency still matches, so another optillm after an
upgrade is never served half-patched. opsctl lint, the upgrade's validation and the audit call
the same verify_source()/check_version()/compare().

| point               | what replaces it                          | relies on                                  |
|---------------------|-------------------------------------------|--------------------------------------------|
| server.load_plugins | plugins.make_subset_loader                | main() calls it through the module global; |
|                     |                                           | each plugin file's SLUG (plugins.json)     |
| server.get_config   | the shared upstream client, per request   | proxy(), proxy_models() call it by name    |
| server.OpenAI       | the same shared client                    | proxy_models() and the `sk-` bearer path   |
| server.app.wsgi_app | gateway.Gate around it (Flask's own hook) | check_api_key, parse_conversation,         |
|                     |                                           | parse_combined_approach,                   |
|                     |                                           | extract_optillm_approach, proxy (policy    |
|                     |                                           | mirrors them); known_approaches; openai's  |
|                     |                                           | Completions.create parameters              |
|                     |                                           | (main.request_fields())                    |
| server.app          | routes.install: the policy inside the chat| server.py's proxy and check_api_key; the   |
|   .view_functions   | view, and a hook after check_api_key that | url_map (routes.verify: exactly            |
|   ["proxy"],        | refuses every other route and method      | routes.STOCK_URL_MAP, check_api_key the    |
|   .before_request   |                                           | only hook); werkzeug's routing and cached  |
|                     |                                           | request body (version)                     |
| server.app.run      | serving.make_run (socket activation,      | main() ends in app.run(host=, port=);      |
|                     | graceful drain)                           | werkzeug's ThreadedWSGIServer (version)    |

The `sk-` bearer path of proxy() (a client key starting with sk- becomes the upstream key, with
a new client) is unreachable here: check_api_key answers 401 to any bearer but the proxy key,
and the launcher refuses a proxy key that starts with sk-. Should it run anyway, server.OpenAI
hands it the shared client, never a per-request one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optillm_proxy_launcher import internals, layout, routes
from optillm_proxy_launcher.settings import CORE_APPROACHES, ConfigRefused

OPTILLM_VERSION = layout.OPTILLM_VERSION

# point -> (the name in optillm/server.py it replaces, every dependency it relies on (internals.py)).
POINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "server.load_plugins": ("load_plugins", ("server.py:load_plugins", "server.py:main", "plugins:SLUG")),
    "server.get_config": ("get_config", ("server.py:get_config", "server.py:proxy", "server.py:proxy_models")),
    "server.OpenAI": ("OpenAI", ("server.py:proxy", "server.py:proxy_models")),
    "server.app.wsgi_app": ("app", ("server.py:check_api_key", "server.py:parse_conversation",
                                    "server.py:parse_combined_approach", "server.py:extract_optillm_approach",
                                    "server.py:proxy", "server.py:known_approaches",
                                    "openai:Completions.create")),
    "server.app.view_functions": ("app", ("server.py:proxy", "server.py:check_api_key", "dist:werkzeug")),
    "server.app.run": ("app", ("server.py:main", "dist:werkzeug")),
}

# optillm version -> dependency -> fingerprint (internals.read: sha256 of the source text, the
# sorted parameter names or the module=SLUG lines; a dist:'s version). openai and werkzeug come
# from the runtime lock (one version of each in every locks/py*/ file), not optillm's wheel.
# Regenerate an entry from a runtime: `uv run python tools/audit_optillm.py --from SITE --table`.
FINGERPRINTS: dict[str, dict[str, str]] = {
    "0.3.12": {
        "dist:werkzeug": "3.1.4",
        "openai:Completions.create": "d35e83caf9a8f5f01f4a47b95bafc61e4858b00c9bd377e18ce0a78791f99114",
        "plugins:SLUG": "88ab035868e975cbff945a0df1163e7828aab07a70d52c8e7a61c81c89938d3c",
        "server.py:check_api_key": "91207628a1e23ae5d0f66016e6f56d16aa0a92f09b3b92b38f451b42450c2e7d",
        "server.py:extract_optillm_approach": "6c4a7d1be083dc38a726f2a69d8227c2001701ee6e0d46f8fc17ed8e28292a80",
        "server.py:get_config": "b7e4036ddafb837e540e47903adeb6d1b61c01f931e0ac2599de9362902c0162",
        "server.py:known_approaches": "a6b8a0a4f187e321ffef6969e4a190c2cf9df6bd35007df62ff4731de8e8e90d",
        "server.py:load_plugins": "d8b3a36b4ed243840ce3689ebe0c47d0096c586766b4c453fa5485ca3fb8507a",
        "server.py:main": "c6b0885fb4a89cfd4f36db6c69548a7fd430962afd51a84badf3562c8afa7a44",
        "server.py:parse_combined_approach": "06953e8694088f4068959203d1561924df86422a2678670863b467429fe0d988",
        "server.py:parse_conversation": "7847a476463ae51ba0b2f5dc31e8369ec945e9a260d9f8075b36b1c05eb14ef4",
        "server.py:proxy": "db193bdf737658d0deefa2ea1033d751bdb50eca287232944601af15bef47c19",
        "server.py:proxy_models": "f9a76c0afb578c588f6d5618a74c821b1aa8bc164b28f8016ebeade6fdaf27d4",
    },
}
PATCHED_NAMES = ("load_plugins", "get_config", "OpenAI", "app")

UNCHANGED, CHANGED, GONE = "unchanged", "changed", "gone"


def dependencies() -> tuple[str, ...]:
    """Every dependency of every point, once, in table order."""
    return tuple(dict.fromkeys(dep for _, deps in POINTS.values() for dep in deps))


@dataclass(frozen=True)
class Verdict:
    point: str
    status: str  # UNCHANGED, CHANGED (a dependency differs) or GONE (server.py no longer binds the name)
    differing: tuple[str, ...]  # dependencies that read otherwise (or not at all) than the table says
    unchecked: tuple[str, ...]  # dependencies whose package the tree does not hold (an optillm wheel: openai)


def compare(tree: Path, version: str = OPTILLM_VERSION, *, strict: bool = True) -> list[Verdict]:
    """Each patch point of `tree` (a directory holding optillm/) against FINGERPRINTS[version].
    strict: a dependency whose package is absent from the tree differs (a runtime must hold it);
    otherwise it is left unchecked (an unpacked wheel holds optillm only)."""
    expected = FINGERPRINTS[version]
    found = internals.read(tree, dependencies())
    source = internals.server_source(tree)
    try:
        bound = internals.bound_names(source) if source is not None else set()
    except SyntaxError:
        bound = set()
    verdicts = []
    for point, (target, deps) in POINTS.items():
        unchecked = () if strict else tuple(d for d in deps if found[d] == internals.ABSENT)
        differing = tuple(d for d in deps if d not in unchecked and found[d] != expected[d])
        status = GONE if target not in bound else CHANGED if differing else UNCHANGED
        verdicts.append(Verdict(point, status, differing, unchecked))
    return verdicts


def describe(verdicts: list[Verdict]) -> str:
    """'server.load_plugins (gone), server.get_config (server.py:get_config, server.py:proxy)': the
    points that differ, then every dependency that does."""
    points = [v.point + (" (gone)" if v.status == GONE else "") for v in verdicts if v.status != UNCHANGED]
    deps = dict.fromkeys(d for v in verdicts if v.status == CHANGED for d in v.differing)
    return ", ".join(points) + (f" ({', '.join(deps)})" if deps else "")


def differences(source: str) -> list[str]:
    """Names of the server.py functions and assignments the points rely on whose source is not
    the pinned version's (or is missing)."""
    found = internals.top_level(source)
    expected = FINGERPRINTS[OPTILLM_VERSION]
    names = [dep.partition(":")[2] for dep in dependencies() if dep.startswith("server.py:")]
    return [name for name in names
            if name not in found or internals.sha256(found[name]) != expected[f"server.py:{name}"]]


HOW = f"this launcher patches optillm {OPTILLM_VERSION} only: reinstall the runtime from the toolkit's locks/"


def check_version(version: str, tree: Path | None = None) -> None:
    """Refuse another optillm than the pinned one; with `tree` (the directory holding its optillm/),
    the refusal names the patch points that differ there, as tools/audit_optillm.py reports them."""
    if version == OPTILLM_VERSION:
        return
    points = describe(compare(tree)) if tree is not None and (tree / "optillm").is_dir() else ""
    detail = f"; patch points that differ: {points}" if points else ""
    raise ConfigRefused(f"optillm {version} is installed, not {OPTILLM_VERSION}{detail}: {HOW}")


def verify_source(server_file: Path, version: str) -> None:
    """Refuse unless the tree holding `server_file` (optillm/server.py) is the pinned optillm, with
    every dependency of every patch point as FINGERPRINTS says (the launcher at start, opsctl lint's
    optillm-internals and the upgrade's validation all call this)."""
    tree = server_file.parent.parent
    try:
        server_file.read_bytes()
    except OSError as exc:
        raise ConfigRefused(f"cannot read {server_file} to verify the patch points ({exc.strerror}): {HOW}") from None
    check_version(version, tree)
    verdicts = compare(tree)
    if any(v.status != UNCHANGED for v in verdicts):
        raise ConfigRefused(f"optillm's internals differ from {OPTILLM_VERSION} at patch points "
                            f"{describe(verdicts)}: {HOW}")


def verify_module(server) -> None:
    """The loaded module: the checks above on its files, plus the names the patches replace."""
    import optillm

    verify_source(Path(server.__file__), getattr(optillm, "__version__", "unknown"))
    missing = [name for name in PATCHED_NAMES if not hasattr(server, name)]
    if missing or not callable(getattr(getattr(server, "app", None), "wsgi_app", None)):
        raise ConfigRefused(f"optillm.server lacks {', '.join(missing) or 'app.wsgi_app'}: "
                            "reinstall the runtime from the toolkit's locks/")
    if tuple(server.known_approaches) != ("none", *CORE_APPROACHES):
        raise ConfigRefused(f"optillm.server.known_approaches is not {OPTILLM_VERSION}'s list: "
                            "reinstall the runtime from the toolkit's locks/")
    routes.verify(server.app, getattr(server, "check_api_key", None))


def apply(server, *, load_plugins, upstream, gate_factory, guard_routes, run) -> None:
    """Install every patch point; verify_module() must have passed."""
    if load_plugins is not None:
        server.load_plugins = load_plugins

    def get_config():
        return upstream.for_current_request(), upstream.api_key

    def shared_openai(*_args, **_kwargs):
        return upstream.for_current_request()

    server.get_config = get_config
    server.OpenAI = shared_openai
    server.app.wsgi_app = gate_factory(server.app.wsgi_app)
    guard_routes(server.app)
    server.app.run = run
