"""The request path against real optillm 0.3.12 (lean runtime from our lock) through the launcher.

One shared upstream connection pool, fan-out unchanged, every in-band override refused with 0
upstream calls, a hung upstream cut at the deadline, upstream failures named (and classified by
smoke as upstream errors), bodies from hypothesis never answered 5xx, and a changed optillm refused
at start. Unit-level versions of the same rules are in tests/test_request_policy.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from ops.probes.client import ApiKey
from ops.probes.smoke import SmokeRow, judge
from optillm_proxy_launcher.policy import RULES
from tests.fixtures.runtime import REPO, free_port, launcher_credentials, start_optillm
from tests.stock_shape import error_code, raw_request

pytestmark = pytest.mark.real

LAUNCHER = REPO / "launcher" / "optillm-proxy-launcher.py"
KEY = "opx-request-path-test-key-0123456789abcdef"
DEADLINE = 3.0
FAN_OUT = {"jerry-xl": 1, "moa-jerry-xl": 3, "bon-jerry-xl": 4, "plansearch-jerry-xl": 4,
           "self_consistency-jerry-xl": 5}
TAG = "<optillm_approach>cepo</optillm_approach>"


def launch(runtime: Path, tmp: Path, base_url: str, **env: str):
    creds = launcher_credentials(tmp / "creds", KEY)
    argv = [str(runtime / "bin" / "python"), "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port", "{port}",
            "--base-url", base_url, "--model", "jerry-xl"]
    return start_optillm(runtime, tmp, base_url, argv=argv, key=KEY,
                         env_extra={"CREDENTIALS_DIRECTORY": str(creds), **env})


@pytest.fixture(scope="module")
def proxy(lean_runtime, upstream_session, tmp_path_factory):
    # A deadline shorter than the per-call timeout: a hung call is cut by the deadline itself.
    server = launch(lean_runtime, tmp_path_factory.mktemp("request-path"), upstream_session.base_url,
                    REQUEST_DEADLINE_SECONDS=str(DEADLINE), UPSTREAM_TIMEOUT_SECONDS="30",
                    PROXY_APPROACHES="moa,bon,plansearch,self_consistency,mcts")
    yield server
    server.stop()


def post(proxy, body, *, key=KEY, timeout=60.0, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{proxy.url}/v1/chat/completions", content=body, timeout=timeout,
                          headers={"Content-Type": "application/json", **headers}, **kw)
    return httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers, timeout=timeout, **kw)


def chat(model: str, content="What is 6*7?", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 50, **extra}


def test_fan_out_is_unchanged_and_calls_share_one_kept_alive_connection(proxy, upstream):
    for model, calls in FAN_OUT.items():
        upstream.reset()
        r = post(proxy, chat(model))
        assert r.status_code == 200, r.text
        seen = upstream.calls()
        assert len(seen) == calls, (model, seen)
        assert {c["model"] for c in seen} == {"jerry-xl"}
        assert {c["authorization"] for c in seen} == {"Bearer upstream-key-for-tests"}
        assert all("x-optillm-proxy-request" not in c["headers"] for c in seen)
    upstream.reset()
    for _ in range(10):
        assert post(proxy, chat("jerry-xl")).status_code == 200
    # Stock 0.3.12 opens a new client, so a new connection, per request: 10 peers here.
    peers = {c["peer"] for c in upstream.calls()}
    assert len(peers) <= 2, peers


OVERRIDES = {
    "tag in system message": ({"model": "moa-jerry-xl", "messages": [
        {"role": "system", "content": TAG}, {"role": "user", "content": "hi"}]}, "approach-tag"),
    "tag in user message": (chat("moa-jerry-xl", f"What is 6*7? {TAG}"), "approach-tag"),
    "tag in list content": (chat("jerry-xl", [{"type": "text", "text": TAG}]), "approach-tag"),
    "tag in assistant message": ({"model": "jerry-xl", "messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": TAG},
        {"role": "user", "content": "b"}]}, "approach-tag"),
    "optillm_approach field": (chat("moa-jerry-xl", optillm_approach="cepo"), "approach-field"),
    "mcts_* fields": (chat("mcts-jerry-xl", mcts_simulations=50, mcts_depth=9), "server-config-field"),
    "combined &": (chat("moa&bon-jerry-xl"), "combined-approach"),
    "combined |": (chat("moa|bon-jerry-xl"), "combined-approach"),
    "two prefixes": (chat("moa-cepo-jerry-xl"), "multiple-approaches"),
    "cepo (48 calls)": (chat("cepo-jerry-xl"), "approach-not-allowed"),
    "rstar (25 calls)": (chat("rstar-jerry-xl"), "approach-not-allowed"),
    "plugin not enabled": (chat("readurls-jerry-xl"), "approach-not-allowed"),
    "client timeout option": (chat("jerry-xl", timeout=3600), "unknown-field"),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_every_in_band_override_is_refused_with_zero_upstream_calls(proxy, upstream, case):
    body, rule = OVERRIDES[case]
    r = post(proxy, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == rule and "refused by optillm-proxy policy" in error["message"]
    assert upstream.calls() == []


def test_mcts_fields_in_one_request_change_nothing_for_the_next(proxy, upstream):
    assert post(proxy, chat("mcts-jerry-xl")).status_code == 200
    before = len(upstream.calls())
    assert before > 1
    upstream.reset()
    # Stock 0.3.12 writes these into its global server_config, for every later request.
    assert post(proxy, chat("mcts-jerry-xl", mcts_simulations=6, mcts_depth=3)).status_code == 400
    assert post(proxy, chat("mcts-jerry-xl")).status_code == 200
    assert len(upstream.calls()) == before


def test_bodies_too_large_malformed_or_not_json(proxy, upstream):
    big = json.dumps(chat("jerry-xl", "x" * (20 * 1024 * 1024))).encode()
    r = post(proxy, big, timeout=120)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body-too-large", r.text[:300]
    r = post(proxy, b'{"model": "jerry-xl", "messages": [')
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed-json"
    r = httpx.post(f"{proxy.url}/v1/chat/completions", content=b"hello", timeout=30,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported-media-type"
    assert upstream.calls() == []
    assert "Traceback" not in proxy.log_text()


def test_a_client_key_starting_with_sk_is_refused_and_never_used_upstream(proxy, upstream):
    r = post(proxy, chat("jerry-xl"), key="sk-client-key-0123456789")
    assert r.status_code == 401
    assert upstream.calls() == []


def test_a_hung_upstream_is_cut_at_the_deadline_and_the_worker_is_free_again(proxy, upstream):
    upstream.delay(120)
    start = time.monotonic()
    r = post(proxy, chat("moa-jerry-xl"))
    elapsed = time.monotonic() - start
    assert r.status_code == 504, r.text
    error = r.json()["error"]
    assert error["code"] == "deadline_exceeded" and f"deadline of {DEADLINE:g} s" in error["message"]
    assert elapsed <= DEADLINE + 1, elapsed
    assert httpx.get(f"{proxy.url}/health", timeout=5).status_code == 200
    upstream.reset()  # releases the held answers
    start = time.monotonic()
    assert post(proxy, chat("jerry-xl"), timeout=10).status_code == 200
    assert time.monotonic() - start < DEADLINE


def smoke_verdict(model: str, response: httpx.Response) -> str:
    row = SmokeRow(model=model, approach=model.split("-", 1)[0] if "-" in model else None)
    judge(row, response, ApiKey(KEY, "test"))
    return row.detail


@pytest.mark.parametrize("status,want,code", [(500, 502, "upstream_error"), (503, 502, "upstream_error"),
                                              (429, 429, "upstream_rate_limited")])
@pytest.mark.parametrize("model", ["jerry-xl", "moa-jerry-xl", "plansearch-jerry-xl"])
def test_upstream_failures_are_named_and_smoke_blames_the_upstream(proxy, upstream, model, status, want, code):
    upstream.fail_with(status)
    r = post(proxy, chat(model))
    assert r.status_code == want, r.text
    assert r.json()["error"]["code"] == code
    message = r.json()["error"]["message"]
    # A fixed reason with the upstream's status; its own words go to the journal only.
    assert f"(HTTP {status})" in message and "injected failure" not in message and upstream.base_url not in message
    assert "injected failure" in proxy.log_text()
    assert smoke_verdict(model, r).startswith("upstream error via proxy"), smoke_verdict(model, r)


def test_refused_connection_is_a_502_smoke_blames_on_the_upstream(lean_runtime, tmp_path, upstream):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    server = launch(lean_runtime, tmp_path, dead)
    try:
        for model in ("jerry-xl", "bon-jerry-xl"):
            r = post(server, chat(model))
            assert r.status_code == 502, r.text
            assert r.json()["error"]["message"].startswith("upstream error: no connection to the upstream")
            assert dead not in r.text
            assert smoke_verdict(model, r).startswith("upstream error via proxy")
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


MODELS = st.sampled_from(["jerry-xl", "moa-jerry-xl", "bon-jerry-xl", "plansearch-jerry-xl", "none-jerry-xl",
                          "cepo-jerry-xl", "moa&bon-jerry-xl", "", "moa-", "-", "a-b-c"])
TEXT = st.text(max_size=40) | st.sampled_from([TAG, "User: x\nAssistant: y", "<think>a</think>"])
CONTENT = st.one_of(TEXT, st.none(), st.integers(), st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])}),
    st.dictionaries(st.text(max_size=5), TEXT, max_size=2), TEXT), max_size=3))
MESSAGE = st.one_of(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x"]),
                                           "content": CONTENT}),
                    st.dictionaries(st.sampled_from(["role", "content", "name"]), TEXT, max_size=3), TEXT)
VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 9), st.floats(allow_nan=False, allow_infinity=False),
                  TEXT, st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), TEXT, max_size=2))
BODY = st.fixed_dictionaries(
    {"model": MODELS | VALUE, "messages": st.lists(MESSAGE, max_size=3) | VALUE},
    optional={"n": VALUE, "stream": VALUE, "max_tokens": VALUE, "temperature": VALUE, "top_p": VALUE,
              "response_format": VALUE, "stop": VALUE, "seed": VALUE, "optillm_approach": VALUE,
              "mcts_depth": VALUE, "extra_body": VALUE, "foo": VALUE})


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(BODY, BODY.map(json.dumps).map(lambda s: s[: len(s) // 2])))
def test_generated_bodies_never_get_a_5xx_or_a_traceback(proxy, upstream_session, body):
    r = post(proxy, body)
    assert r.status_code < 500, (body, r.status_code, r.text[:500])
    if r.status_code != 200:
        assert r.json()["error"], r.text[:500]  # JSON, never an HTML error page


# --- which requests reach stock's chat view (launcher routes.py), with raw sockets -----------------

VALID = json.dumps(chat("moa-jerry-xl")).encode()  # 3 upstream calls when admitted
TAGGED = json.dumps(chat("moa-jerry-xl", f"What is 6*7? {TAG}")).encode()  # 48 calls unguarded (cepo)
SPELLINGS = [  # (method, target): none is the canonical request
    ("post", "/v1/chat/completions"), ("Post", "/v1/chat/completions"),
    ("POST", "/%2Fv1/chat/completions"), ("POST", "/%2fv1/chat/completions"), ("POST", "//v1/chat/completions"),
    ("POST", "/v1//chat/completions"), ("POST", "/v1%2Fchat%2Fcompletions"), ("POST", "/v1/chat/%63ompletions"),
    ("POST", "/v1/./chat/completions"), ("POST", "/v1/x/../chat/completions"), ("POST", "/v1/chat/completions/"),
    ("POST", "http://127.0.0.1:4020//v1/chat/completions"), ("POST", "http://127.0.0.1:4020/v1/chat/completions"),
    ("post", "http://127.0.0.1:4020//v1/chat/completions"), ("POST", "/v1/chat/completions#x"),
    ("OPTIONS", "/v1/chat/completions"), ("GET", "/v1/chat/completions"), ("PUT", "/v1/chat/completions"),
    ("HEAD", "/v1/models"), ("HEAD", "/health"), ("OPTIONS", "/health"), ("GET", "/static/x"),
]


def raw_post(proxy, method: str, target: str, body: bytes, *, auth: bytes | None = None,
             host: bytes = b"127.0.0.1", content_type: bytes | None = b"application/json"):
    head = f"{method} {target} HTTP/1.1\r\nHost: ".encode("latin-1") + host
    head += b"\r\nAuthorization: " + (auth if auth is not None else f"Bearer {KEY}".encode())
    if content_type is not None:
        head += b"\r\nContent-Type: " + content_type
    head += b"\r\nContent-Length: %d" % len(body)
    return raw_request(proxy.port, head, body, timeout=60)


def records(proxy) -> list[dict]:
    return [json.loads(line.split(" ", 1)[1]) for line in proxy.log_text().splitlines()
            if line.startswith("optillm-proxy-record ")]


@pytest.mark.parametrize("method,target", SPELLINGS, ids=[f"{m} {t}" for m, t in SPELLINGS])
def test_no_spelling_reaches_stock_chat_unchecked(proxy, upstream, method, target):
    """Any method or target spelling: a 4xx and 0 upstream calls, or (a server that normalised the
    target itself, passing the app no raw target) the canonical request, through the policy."""
    status, headers, payload = raw_post(proxy, method, target, TAGGED)
    assert 400 <= status < 500 and status != 401, payload[:300]
    assert upstream.calls() == []
    status, headers, payload = raw_post(proxy, method, target, VALID)
    last = records(proxy)[-1]
    if status == 200:  # e.g. `//v1/...`: Python's http.server (werkzeug's base) collapses it first
        assert (last["OPTILLM_PROXY_PATH"], last["OPTILLM_PROXY_APPROACH"], last["OPTILLM_PROXY_POLICY_RULE"]) == (
            "/v1/chat/completions", "moa", "")
        assert len(upstream.calls()) == FAN_OUT["moa-jerry-xl"]
        return
    assert 400 <= status < 500 and status != 401, payload[:300]
    assert upstream.calls() == []
    rule = last["OPTILLM_PROXY_POLICY_RULE"]
    assert rule in RULES and last["OPTILLM_PROXY_ERROR_CODE"] == rule
    if method != "HEAD":
        assert error_code(payload) == rule, payload[:300]


def test_the_canonical_request_still_passes_with_a_query(proxy, upstream):
    status, _, payload = raw_post(proxy, "POST", "/v1/chat/completions?api-version=1", VALID)
    assert status == 200, payload[:300]
    assert len(upstream.calls()) == FAN_OUT["moa-jerry-xl"]


MALFORMED = {  # name: (body, extra raw_post arguments)
    "100k-deep arrays": (b"[" * 100_000 + b"]" * 100_000, {}),
    "100k-deep objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {}),
    "null model": (b'{"model": null, "messages": [{"role": "user", "content": "x"}]}', {}),
    "int past int64": (b'{"model": "jerry-xl", "max_tokens": 99999999999999999999, '
                       b'"messages": [{"role": "user", "content": "x"}]}', {}),
    "1e400": (b'{"model": "jerry-xl", "temperature": 1e400, "messages": [{"role": "user", "content": "x"}]}', {}),
    "NaN": (b'{"model": "jerry-xl", "top_p": NaN, "messages": [{"role": "user", "content": "x"}]}', {}),
    "lone surrogate": (b'{"model": "jerry-xl", "messages": [{"role": "user", "content": "\\ud800"}]}', {}),
    "not UTF-8": (b'{"model": "jerry-xl", "messages": [{"role": "user", "content": "\xff\xfe"}]}', {}),
    "no Content-Type": (VALID, {"content_type": None}),
    "Content-Length no number": (VALID, {}),
    "host not a name": (VALID, {"host": b"a" * 64 + b".example"}),
    "latin-1 Authorization": (VALID, {"auth": "Bearer clé".encode("latin-1")}),
    "UTF-8 Authorization": (VALID, {"auth": "Bearer ключ".encode()}),
    "the key plus latin-1 Authorization": (VALID, {"auth": f"Bearer {KEY}\u00e9".encode("latin-1")}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gets_a_4xx_never_a_500(proxy, upstream, case):
    body, extra = MALFORMED[case]
    if case == "Content-Length no number":
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 12abc")
        status, _, payload = raw_request(proxy.port, head, body, timeout=60)
    else:
        status, _, payload = raw_post(proxy, "POST", "/v1/chat/completions", body, **extra)
    assert 400 <= status < 500, (status, payload[:300])
    assert upstream.calls() == []
    if "Authorization" in case:
        assert status == 401 and b"optillm-proxy policy" not in payload
    else:
        assert error_code(payload) in RULES, payload[:300]
        assert b"\n" not in json.loads(payload)["error"]["message"].encode()


def test_refusals_are_counted_by_rule_in_the_metrics(proxy):
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    counted = {line.split('rule="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line.startswith("optillm_proxy_policy_refusals_total{")}
    recorded: dict[str, int] = {}
    for record in records(proxy):
        if record["OPTILLM_PROXY_POLICY_RULE"]:
            recorded[record["OPTILLM_PROXY_POLICY_RULE"]] = recorded.get(record["OPTILLM_PROXY_POLICY_RULE"], 0) + 1
    assert counted == recorded and {"malformed-request", "target-not-canonical", "method-not-allowed",
                                    "nesting-too-deep"} <= set(counted), counted


def test_no_traceback_after_everything(proxy):
    assert "Traceback" not in proxy.log_text()


def run_in_runtime(runtime: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(runtime / "bin" / "python"), "-I", "-c",
                           f"import sys; sys.path.insert(0, {str(LAUNCHER.parent)!r})\n{code}"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_request_fields_come_from_the_locked_openai(lean_runtime):
    proc = run_in_runtime(lean_runtime, "from optillm_proxy_launcher.main import request_fields\n"
                                        "print(' '.join(sorted(request_fields())))")
    assert proc.returncode == 0, proc.stderr
    fields = set(proc.stdout.split())
    assert {"model", "messages", "n", "stream", "max_tokens", "temperature", "tools", "response_format"} <= fields
    assert not fields & {"timeout", "extra_headers", "extra_body", "extra_query", "self"}


def test_the_fingerprinted_openai_parameters_are_what_request_fields_reads(lean_runtime):
    """patches fingerprints openai's Completions.create parameters by reading its source (AST);
    main.request_fields() takes them from inspect.signature: the two must name the same fields."""
    proc = run_in_runtime(lean_runtime, "import pathlib, openai\n"
                                        "from optillm_proxy_launcher import internals\n"
                                        "from optillm_proxy_launcher.main import request_fields\n"
                                        "from optillm_proxy_launcher.policy import CLIENT_OPTIONS\n"
                                        "site = pathlib.Path(openai.__file__).parent.parent\n"
                                        "read = set(internals.completions_create_parameters(site))\n"
                                        "print(read - CLIENT_OPTIONS == request_fields(), len(read))")
    assert proc.returncode == 0, proc.stderr
    same, count = proc.stdout.split()
    assert same == "True" and int(count) > 20, proc.stdout


def test_the_real_server_py_matches_the_fingerprints(lean_runtime):
    proc = run_in_runtime(lean_runtime, "import optillm.server as s\nfrom optillm_proxy_launcher import patches\n"
                                        "patches.verify_module(s)\nprint('verified')")
    assert proc.returncode == 0 and proc.stdout.strip() == "verified", proc.stderr[-2000:]


def start_an_edited_optillm(lean_runtime: Path, tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess:
    """Starts the launcher on a hardlinked copy of the runtime whose optillm/server.py has ``old``
    replaced by ``new`` (as another release would have it); the cached runtime stays untouched."""
    copy = tmp_path / "runtime"
    subprocess.run(["cp", "-al", str(lean_runtime), str(copy)], check=True)
    [server_py] = copy.glob("lib/python3*/site-packages/optillm/server.py")
    text = server_py.read_text()
    assert old in text
    server_py.unlink()  # a hardlink: never write through it into the cached runtime
    server_py.write_text(text.replace(old, new, 1))
    creds = launcher_credentials(tmp_path / "creds", KEY)
    try:
        return subprocess.run([str(copy / "bin" / "python"), "-I", str(LAUNCHER), "--host", "127.0.0.1", "--port",
                               str(free_port()), "--base-url", "http://127.0.0.1:9/v1"], capture_output=True,
                              text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                           "CREDENTIALS_DIRECTORY": str(creds), "HOME": str(tmp_path)})
    finally:
        shutil.rmtree(copy)
        assert os.path.exists(lean_runtime / "bin" / "python")


def launcher_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "optillm-proxy-launcher" in line]


def test_another_optillm_is_refused_at_start_with_exit_78(lean_runtime, tmp_path):
    """A runtime whose optillm/server.py differs (as another release would): no half-patched serving."""
    proc = start_an_edited_optillm(lean_runtime, tmp_path, "    data = request.get_json()\n",
                                   "    data = request.get_json(silent=True)\n")
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert launcher_lines(proc) == [
        "optillm-proxy-launcher: refused: optillm's internals differ from 0.3.12 at patch points "
        "server.get_config, server.OpenAI, server.app.wsgi_app, server.app.view_functions (server.py:proxy): "
        "this launcher patches optillm 0.3.12 only: reinstall the runtime from the toolkit's locks/"]
    assert "Traceback" not in proc.stderr


def test_an_optillm_with_another_route_is_refused_at_start_with_exit_78(lean_runtime, tmp_path):
    """Every fingerprinted function unchanged, one route more: the route guard's table no longer
    decides every route, so the launcher does not serve."""
    proc = start_an_edited_optillm(lean_runtime, tmp_path, "\ndef parse_args():",
                                   "\n@app.route('/v1/embeddings', methods=['POST'])\n"
                                   "def embeddings():\n    return proxy()\n\ndef parse_args():")
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert launcher_lines(proc) == ["optillm-proxy-launcher: refused: optillm's routes differ from 0.3.12 "
                                    "(/v1/embeddings): reinstall the runtime from the toolkit's locks/"]
