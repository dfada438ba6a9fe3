"""A Flask app shaped like optillm 0.3.12's, guarded exactly as the launcher guards the real one.

Same url_map (routes.verify() accepts it: it is checked against the same table the launcher checks
the real app against), a key check that behaves like 0.3.12's check_api_key (a bearer compared with
secrets.compare_digest on str, which raises on non-ASCII text), and sentinel views. The chat view
records whether the policy accepted this very request's body before it ran, and reads the body as
0.3.12's proxy() does (request.get_json(), then the model as a string). Installed through
patches.apply with the launcher's own Gate and routes.install, in the launcher's order.

Used by the fast tier (tests/test_route_guard.py, tests/test_request_policy.py); the same
invariant against real optillm is in tests/test_request_path.py.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

from flask import Flask, g, jsonify, request
from werkzeug.serving import make_server

from optillm_proxy_launcher import patches, routes, settings, usage
from optillm_proxy_launcher.gateway import Gate
from optillm_proxy_launcher.policy import Policy, Verdict
from optillm_proxy_launcher.upstream import Registry

KEY = "opx-stock-shape-key-0123456789"
CANONICAL_CHAT = "/v1/chat/completions"
# What openai-python 2.14's create() accepts (the launcher reads it from the runtime at start;
# tests/test_request_path.py checks the real list).
FIELDS = frozenset({"model", "messages", "n", "stream", "max_tokens", "max_completion_tokens", "temperature",
                    "top_p", "response_format", "stop", "seed", "user", "tools", "tool_choice", "metadata",
                    "stream_options"})
TABLE = settings.plugin_table()
NAMES = frozenset({"none", *settings.CORE_APPROACHES, *TABLE})


def make_policy(approaches: str | None = None, plugins=(), **env) -> Policy:
    environ = {**env, **({"PROXY_APPROACHES": approaches} if approaches is not None else {})}
    return Policy(settings.request_settings(environ, list(plugins), TABLE), NAMES, FIELDS)


class SpyPolicy(Policy):
    """The real policy; each verdict is also kept on flask.g, for the chat view to look at."""

    @property
    def calls(self) -> list[int]:
        return self.__dict__.setdefault("_calls", [0])

    def check(self, raw, content_type):
        self.calls[0] += 1
        verdict = super().check(raw, content_type)
        g.setdefault("verdicts", []).append((raw, verdict))
        return verdict


@dataclass
class ChatRun:
    method: str  # as the client wrote it
    raw_target: str | None
    policy_passed: bool  # the policy's last verdict in this request accepted exactly these bytes
    approach: str


@dataclass
class Stock:
    app: Flask
    policy: Policy
    registry: Registry
    records: list = field(default_factory=list)
    chat_runs: list[ChatRun] = field(default_factory=list)
    other_views: list[str] = field(default_factory=list)

    def policy_calls(self) -> int:
        return self.policy.calls[0]

    def refusals(self) -> dict[str, int]:
        """Refused requests by rule, from the records (what metrics.Metrics.observe counts them from)."""
        counts: dict[str, int] = {}
        for record in self.records:
            if record.policy_rule:
                counts[record.policy_rule] = counts.get(record.policy_rule, 0) + 1
        return counts


def build(policy: Policy | None = None, **env) -> Stock:
    base = policy or make_policy(**env)
    spy = SpyPolicy(base.settings, base.approach_names, base.request_fields)
    app = Flask("optillm.server")  # Flask adds /static/<path:filename>, as for optillm's app

    def check_api_key():  # what 0.3.12's does: /health open, else a bearer equal to the key
        if request.path == "/health":
            return None
        header = request.headers.get("Authorization")
        if not header or not header.startswith("Bearer "):
            return jsonify({"error": "Invalid Authorization header. Expected format: "
                                     "'Authorization: Bearer YOUR_API_KEY'"}), 401
        if not secrets.compare_digest(header.split("Bearer ", 1)[1].strip(), KEY):
            return jsonify({"error": "Invalid API key"}), 401
        return None

    app.before_request(check_api_key)
    stock = Stock(app, spy, Registry())

    @app.route("/v1/chat/completions", methods=["POST"])
    def proxy():
        verdicts = g.get("verdicts", [])
        body = request.get_data()
        # The bytes the policy accepted, less stream_options (the proxy honours those itself).
        passed = (bool(verdicts) and isinstance(verdicts[-1][1], Verdict)
                  and usage.without_stream_options(verdicts[-1][1].body, verdicts[-1][0]) == body)
        stock.chat_runs.append(ChatRun(request.environ.get("REQUEST_METHOD", ""),
                                       request.environ.get("RAW_URI"), passed,
                                       request.environ.get(routes.APPROACH_KEY, "")))
        data = request.get_json()  # as 0.3.12's proxy(): a 415/400 here would be an HTML page
        model = data.get("model", "jerry-xl")
        model.split("-")  # 0.3.12 parses the model name as a string
        return jsonify({"choices": [{"message": {"role": "assistant", "content": "42"}}]}), 200

    @app.route("/v1/models", methods=["GET"])
    def proxy_models():
        stock.other_views.append("proxy_models")
        return jsonify({"object": "list", "data": []}), 200

    @app.route("/health", methods=["GET"])
    def health():
        stock.other_views.append("health")
        return jsonify({"status": "ok"}), 200

    routes.verify(app, check_api_key)
    server = SimpleNamespace(app=app)
    patches.apply(server, load_plugins=None, upstream=SimpleNamespace(for_current_request=lambda: None,
                                                                       api_key="x"),
                  gate_factory=lambda wsgi: Gate(wsgi, spy, stock.registry, "http://127.0.0.1:4000/v1",
                                                 [stock.records.append], metrics_stand_in),
                  guard_routes=lambda flask_app: routes.install(flask_app, spy), run=None)
    return stock


def metrics_stand_in(environ, start_response):
    """Where the launcher mounts prometheus_client's app (not in the dev env)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"# metrics stand-in\n"]


class Served:
    """werkzeug's own server (its request-line parsing, REQUEST_URI/RAW_URI) on a loopback port."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=False)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send `head` (request line and headers, no blank line) and `body`; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, payload


def error_code(payload: bytes) -> str | None:
    """The `code` of an error in OpenAI's shape, else None."""
    try:
        error = json.loads(payload)["error"]
        return error["code"] if isinstance(error, dict) and error.get("message") and error.get("type") else None
    except (ValueError, KeyError, TypeError):
        return None
