"""The documented points where the launcher changes optillm 0.3.12 in memory, and their verification.

optillm's files are never edited. Each point below relies on what a 0.3.12 function does (read
from its source): `verify()` compares those functions with the 0.3.12 source, by sha256 of each
function's text, and refuses to start (exit 78, one line) when any differs, so another optillm
after an upgrade is never served half-patched.

| point                          | what replaces it                         | relies on (0.3.12)                        |
|--------------------------------|------------------------------------------|-------------------------------------------|
| server.load_plugins            | plugins.make_subset_loader               | main() calls it through the module global |
| server.get_config              | the shared upstream client, per request  | proxy(), proxy_models() call it by name   |
| server.OpenAI                  | the same shared client                   | proxy_models() and the `sk-` bearer path  |
| server.app.wsgi_app            | gateway.Gate around it (Flask's own hook)| check_api_key, parse_conversation,        |
|                                |                                          | parse_combined_approach (policy mirrors)  |
| server.app.view_functions      | routes.install: the policy inside the    | url_map as routes.STOCK_URL_MAP, the chat |
|   ["proxy"], before_request    | chat view; a hook after check_api_key    | view `proxy`, check_api_key the only hook |
|                                | that refuses every other route/method    | (routes.verify)                           |
| server.app.run                 | serving.make_run (socket activation,     | main() ends in app.run(host=, port=)      |
|                                | graceful drain)                          |                                           |

The `sk-` bearer path of proxy() (a client key starting with sk- becomes the upstream key, with
a new client) is unreachable here: check_api_key answers 401 to any bearer but the proxy key,
and the launcher refuses a proxy key that starts with sk-. Should it run anyway, server.OpenAI
hands it the shared client, never a per-request one.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from optillm_proxy_launcher import routes
from optillm_proxy_launcher.settings import CORE_APPROACHES, ConfigRefused

OPTILLM_VERSION = "0.3.12"
# sha256 of each function's source text (ast.get_source_segment, decorators excluded) in
# optillm 0.3.12's optillm/server.py.
FINGERPRINTS = {
    "get_config": "b7e4036ddafb837e540e47903adeb6d1b61c01f931e0ac2599de9362902c0162",
    "load_plugins": "d8b3a36b4ed243840ce3689ebe0c47d0096c586766b4c453fa5485ca3fb8507a",
    "parse_combined_approach": "06953e8694088f4068959203d1561924df86422a2678670863b467429fe0d988",
    "parse_conversation": "7847a476463ae51ba0b2f5dc31e8369ec945e9a260d9f8075b36b1c05eb14ef4",
    "extract_optillm_approach": "6c4a7d1be083dc38a726f2a69d8227c2001701ee6e0d46f8fc17ed8e28292a80",
    "check_api_key": "91207628a1e23ae5d0f66016e6f56d16aa0a92f09b3b92b38f451b42450c2e7d",
    "proxy": "db193bdf737658d0deefa2ea1033d751bdb50eca287232944601af15bef47c19",
    "proxy_models": "f9a76c0afb578c588f6d5618a74c821b1aa8bc164b28f8016ebeade6fdaf27d4",
    "main": "c6b0885fb4a89cfd4f36db6c69548a7fd430962afd51a84badf3562c8afa7a44",
}
PATCHED_NAMES = ("load_plugins", "get_config", "OpenAI", "app")


def fingerprints(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in FINGERPRINTS:
            text = ast.get_source_segment(source, node) or ""
            found[node.name] = hashlib.sha256(text.encode()).hexdigest()
    return found


def differences(source: str) -> list[str]:
    """Names of the patch-relevant functions whose source is not 0.3.12's (or is missing)."""
    found = fingerprints(source)
    return [name for name, digest in FINGERPRINTS.items() if found.get(name) != digest]


HOW = "this launcher patches optillm 0.3.12 only: reinstall the runtime from the toolkit's locks/"


def check_version(version: str) -> None:
    if version != OPTILLM_VERSION:
        raise ConfigRefused(f"optillm {version} is installed, not {OPTILLM_VERSION}: {HOW}")


def verify_source(server_file: Path, version: str) -> None:
    """Refuse unless `server_file` is 0.3.12's optillm/server.py as far as the patches rely on it."""
    how = HOW
    check_version(version)
    try:
        source = server_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigRefused(f"cannot read {server_file} to verify the patch points ({exc.strerror}): {how}") from None
    try:
        changed = differences(source)
    except SyntaxError:
        changed = list(FINGERPRINTS)
    if changed:
        raise ConfigRefused(f"optillm's internals differ from {OPTILLM_VERSION} in server.py "
                            f"({', '.join(changed)}): {how}")


def verify_module(server) -> None:
    """The loaded module: the source checks above, plus the names the patches replace."""
    import optillm

    verify_source(Path(server.__file__), getattr(optillm, "__version__", "unknown"))
    missing = [name for name in PATCHED_NAMES if not hasattr(server, name)]
    if missing or not callable(getattr(getattr(server, "app", None), "wsgi_app", None)):
        raise ConfigRefused(f"optillm.server lacks {', '.join(missing) or 'app.wsgi_app'}: "
                            "reinstall the runtime from the toolkit's locks/")
    if tuple(server.known_approaches) != ("none", *CORE_APPROACHES):
        raise ConfigRefused("optillm.server.known_approaches is not 0.3.12's list: "
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
