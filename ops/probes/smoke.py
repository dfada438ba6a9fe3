"""`opsctl smoke`: one small deterministic chat completion per model, and proof that strategies ran.

A 200 is not enough: started with `--approach proxy`, OptiLLM 0.3.12 answers `moa-jerry-xl` with a
normal completion while MoA never ran. So for a prefixed model we check who built the answer.

The "strategy ran" signal for 0.3.12 (optillm/server.py, `proxy()`):
- Pass-through (approach `none`, and the `proxy` plugin that `--approach proxy` forces) returns the
  upstream's own body through `jsonify(result)`: it has the upstream's `id`, `object` and `created`.
- A strategy's answer is built by optillm itself as `response_data = {'model', 'choices', 'usage':
  {'completion_tokens', 'completion_tokens_details'}}`: no `id`, no `object`, no `created`.
So a prefixed model's answer without any of `id`/`object`/`created` means the strategy ran; with
them, the request was passed through and the strategy was skipped (reported as a failure).
Proven against a real 0.3.12 started both ways (tests/probes/test_probes_real.py). Plugin prefixes
(e.g. `majority_voting-`) build their answer the same way, so the same test applies; the `proxy`
plugin forwards by design and is checked like a base model.

Upstream failures, as 0.3.12 really reports them (LiteLLM stopped, or answering 500):
- HTTP 500 `{"error": "Connection error."}` or `{"error": "Error code: 500 - ..."}` (the OpenAI
  client's exception text), for the base model, plansearch and self_consistency;
- HTTP 200 built by optillm with `usage.completion_tokens == 0` and content such as
  `Error: Could not generate any completions` (moa, bon, majority_voting swallow the errors).
Both are reported as `upstream error via proxy`, so an operator looks at LiteLLM, not the proxy.
Through the launcher, the proxy names these itself: HTTP 502/429/504 with error `type`
`upstream_error`, `upstream_timeout` or `deadline_exceeded`, and HTTP 400 `upstream_rejected` when
LiteLLM judged the request invalid (launcher/optillm_proxy_launcher/gateway.py), reported the same
way, with what to check for the `code` (`upstream_key_refused`: the proxy's LiteLLM key). A request
the launcher's policy refuses (HTTP 400/413/415, `refused by optillm-proxy policy (RULE): ...`, `code`
RULE) never reached optillm: reported as a refusal, with the rule (`policy_rule` in --json).

How a run goes: the models run at once, at most --concurrency at a time, and the whole run is
bounded by --timeout (a model still running then fails with `no answer within --timeout`, one not
started yet says so): against a hung LiteLLM `--all` takes --timeout, not five times it. The rows
keep the order the models were named in. The first model goes alone for a moment (KEY_CHECK_SECONDS)
before the others follow: a wrong key answers 401 at once, so it is reported once, in one line, and
no other model is sent; a refused connection likewise stops the run (exit 2).

Exit codes: 0 all passed, 1 any failed or skipped (a rejected key included), 2 proxy unreachable,
3 usage error.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ops.from_launcher import settings

from ops.probes.client import ApiKey
from ops.from_launcher.layout import DEFAULT, OPTILLM_VERSION, STRATEGY_PREFIXES

PASSED, FAILED, UNREACHABLE = 0, 1, 2

# 0.3.12's core approaches (server.py `known_approaches`) and bundled plugin slugs, as the launcher
# has them (settings.py, plugins.json): a model named `<one of these>-<base>` asks for that approach.
CORE_APPROACHES = settings.CORE_APPROACHES


def plugin_slugs() -> tuple[str, ...]:
    from ops.from_launcher.plugins import table

    return tuple(table())
# Approaches whose answer is the upstream's own body by design: no shape test for them.
PASS_THROUGH = ("none", "proxy")

PROMPT = "Reply with exactly one word: ready"
MAX_TOKENS = 32
PASS_THROUGH_KEYS = ("id", "object", "created")
# The OpenAI client's exception texts that optillm returns as {"error": "..."} with HTTP 500.
UPSTREAM_ERROR_TEXT = re.compile(r"^(Connection error|Error code: \d{3}|Request timed out)")
# The launcher's error types for a request that LiteLLM failed or that ran out of time.
UPSTREAM_ERROR_TYPES = ("upstream_error", "upstream_timeout", "deadline_exceeded")
# The launcher's error codes (gateway.py) for what LiteLLM answered, and what to check for each.
UPSTREAM_ERROR_HINTS = {
    "upstream_key_refused": f"LiteLLM refused the proxy's LiteLLM key: check {DEFAULT.upstream_key_file}",
    "upstream_rate_limited": "LiteLLM rate-limits the proxy's key: LiteLLM's limits",
    "upstream_rejected": "LiteLLM rejected the request: does LiteLLM route the base model?",
}
# The launcher's policy refusals (policy.py Refusal.body): never sent to optillm.
POLICY_REFUSAL = re.compile(r"^refused by optillm-proxy policy \(([a-z0-9-]+)\): ?(.*)", re.S)

DEFAULT_CONCURRENCY = 5  # --all's five models at once
# The first model goes alone this long (at most a quarter of --timeout) before the others follow:
# a wrong key answers 401 in milliseconds, so then no other model is sent.
KEY_CHECK_SECONDS = 0.5


@dataclass
class SmokeRow:
    model: str
    approach: str | None  # None for a base (unprefixed) model
    result: str = "fail"  # pass | fail | skipped | unreachable
    latency_s: float | None = None
    completion_tokens: int | None = None
    strategy_ran: bool | None = None  # None: not a strategy model, or no answer to judge
    http_status: int | None = None
    policy_rule: str | None = None  # the launcher's policy rule that refused the request
    detail: str = ""


@dataclass
class SmokeReport:
    url: str
    key_source: str
    rows: list[SmokeRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key_rejected: str | None = None  # the one 401 line, when the proxy rejected the key

    @property
    def exit_code(self) -> int:
        if any(r.result == "unreachable" for r in self.rows):
            return UNREACHABLE
        return PASSED if self.rows and all(r.result == "pass" for r in self.rows) else FAILED


def approach_of(model: str) -> str | None:
    """The approach a model name asks 0.3.12 for (`moa-jerry-xl` -> `moa`), None for a base model."""
    head = model.split("-", 1)[0]
    if "-" in model and (head in CORE_APPROACHES or head in plugin_slugs() or head == "none"):
        return head
    return None


def plugin_slugs_from_env(env_file: Path) -> tuple[list[str], str | None]:
    """Plugin slugs PROXY_PLUGINS enables in the env file, read as systemd reads the file and
    parsed by the launcher's own parser; a note when there is none to add."""
    from ops.lint.readers.envfile import parse_env_file

    try:
        text = env_file.read_text()
    except OSError as exc:
        return [], f"plugin prefixes not checked: cannot read {env_file} ({exc.strerror}); use --plugin SLUG"
    value = parse_env_file(text).as_dict().get("PROXY_PLUGINS", "none")
    try:
        from ops.from_launcher.plugins import table

        enabled = settings.parse_plugin_setting(value, table())
    except settings.ConfigRefused as exc:
        return [], f"plugin prefixes not checked: the launcher refuses this setting ({exc}); see opsctl lint"
    if enabled == "all":
        return [], "PROXY_PLUGINS=all: plugin prefixes not checked one by one; name them with --plugin SLUG"
    return enabled, None


def models_to_check(models: tuple[str, ...], all_models: bool, base_model: str,
                    plugins: tuple[str, ...], env_plugins: list[str]) -> list[str]:
    wanted = list(models)
    if all_models:
        wanted += [base_model] + [f"{p}-{base_model}" for p in STRATEGY_PREFIXES]
        plugins = tuple(env_plugins) + tuple(plugins)
    wanted += [f"{slug}-{base_model}" for slug in plugins]
    seen: set[str] = set()
    return [m for m in wanted if not (m in seen or seen.add(m))]


def plan(models: tuple[str, ...], all_models: bool, base_model: str, plugins: tuple[str, ...],
         env_file: str | None, timeout: float) -> tuple[list[str], list[str]]:
    """The models to check and notes for the operator; UsageProblem for bad arguments."""
    from ops.probes.client import UsageProblem
    from ops.from_launcher.layout import DEFAULT

    if not models and not all_models and not plugins:
        raise UsageProblem("name at least one MODEL, or use --all / --plugin SLUG")
    if timeout <= 0:
        raise UsageProblem(f"--timeout must be > 0 seconds (got {timeout:g})")
    try:
        known = plugin_slugs()
    except settings.ConfigRefused as exc:
        raise UsageProblem(f"cannot check plugin slugs: {exc}") from None
    unknown = [s for s in plugins if s not in known]
    if unknown:
        raise UsageProblem(f"unknown plugin slug(s) {', '.join(unknown)}; OptiLLM {OPTILLM_VERSION} bundles: "
                           + " ".join(known))
    notes: list[str] = []
    env_plugins: list[str] = []
    if all_models:
        env_plugins, note = plugin_slugs_from_env(Path(env_file) if env_file else DEFAULT.env_file)
        notes += [note] if note else []
    return models_to_check(models, all_models, base_model, plugins, env_plugins), notes


def _error(response) -> tuple[str, str | None, str | None]:
    """(message, error type, error code) of an error answer, as the proxy wrote them."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or "(empty body)", None, None
    err = body.get("error") if isinstance(body, dict) else None
    kind = code = None
    if isinstance(err, dict):
        kind = err.get("type") if isinstance(err.get("type"), str) else None
        code = err.get("code") if isinstance(err.get("code"), str) else None
        err = err.get("message", err)
    return str(err if err is not None else body)[:300], kind, code


def judge(row: SmokeRow, response, key: ApiKey) -> None:
    """Fill row.result/detail from the proxy's answer."""
    row.http_status = response.status_code
    if response.status_code == 401:
        row.detail = (f"401: the proxy rejected the key from {key.source}; "
                      "pass --api-key or set OPSCTL_API_KEY to the proxy key")
        return
    if response.status_code != 200:
        text, kind, code = _error(response)
        refusal = POLICY_REFUSAL.match(text)
        if refusal:
            row.policy_rule = code or refusal.group(1)
            row.detail = (f"proxy answered {response.status_code}: refused by optillm-proxy policy "
                          f"({row.policy_rule}): {refusal.group(2)} (never sent to optillm)")
        elif (kind in UPSTREAM_ERROR_TYPES or code in UPSTREAM_ERROR_HINTS
              or (response.status_code >= 500 and UPSTREAM_ERROR_TEXT.match(text))):
            hint = UPSTREAM_ERROR_HINTS.get(code)
            row.detail = f"upstream error via proxy ({response.status_code}): {text}" + (f" ({hint})" if hint else "")
        else:
            row.detail = f"proxy answered {response.status_code}: {text}"
        return
    try:
        body = response.json()
    except ValueError:
        row.detail = "200 but the body is not JSON"
        return
    problem = schema_problem(body)
    if problem:
        row.detail = f"200 but not an OpenAI chat completion: {problem}"
        return
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens = usage.get("completion_tokens")
    row.completion_tokens = tokens if isinstance(tokens, int) else None
    content = body["choices"][0]["message"]["content"]
    if row.approach is None or row.approach in PASS_THROUGH:
        row.result = "pass"
        return
    row.strategy_ran = not any(k in body for k in PASS_THROUGH_KEYS)
    if not row.strategy_ran:
        row.result = "skipped"
        row.detail = (f"strategy {row.approach} did not run: the answer is the upstream's pass-through "
                      "body (has id/object/created); is the proxy started with --approach?")
        return
    if row.completion_tokens == 0:
        row.detail = (f"upstream error via proxy: {row.approach} got no completion from the upstream "
                      f"(optillm answered 200 {content.strip()[:120]!r} with 0 completion tokens)")
        return
    row.result = "pass"


def schema_problem(body) -> str | None:
    if not isinstance(body, dict):
        return "top level is not an object"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return "choices[0].message missing"
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return "empty assistant content"
    if message.get("role", "assistant") != "assistant":
        return f"choices[0].message.role is {message.get('role')!r}, not 'assistant'"
    if "usage" in body and not isinstance(body["usage"], dict):
        return "usage is not an object"
    return None


def request_body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0, "max_tokens": MAX_TOKENS}


def check_model(client, model: str, key: ApiKey, timeout: float, clock=time.monotonic) -> SmokeRow:
    """One model's request and verdict. httpx bounds each operation by `timeout`; the whole run's
    bound (a server that trickles bytes) is run()'s."""
    from ops.probes.client import import_httpx

    httpx = import_httpx()

    row = SmokeRow(model=model, approach=approach_of(model))
    start = clock()
    try:
        response = client.post("/v1/chat/completions", json=request_body(model), headers=key.headers())
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        row.result = "unreachable"
        reason = str(exc) or type(exc).__name__
        row.detail = f"proxy unreachable at {client.base_url}: {reason} (is optillm-proxy running?)"
    except httpx.TimeoutException:
        row.detail = f"no answer within --timeout {timeout:g}s"
    except httpx.HTTPError as exc:
        row.detail = f"{type(exc).__name__}: {exc}"
    else:
        judge(row, response, key)
    row.latency_s = round(clock() - start, 3)
    return row


def run(base_url: str, key: ApiKey, models: list[str], timeout: float, notes=(),
        transport=None, clock=time.monotonic, concurrency: int = DEFAULT_CONCURRENCY) -> SmokeReport:
    """Check the models at once (at most `concurrency` at a time) within `timeout` for the whole
    run; the rows keep the models' order."""
    from ops.probes.client import make_client

    report = SmokeReport(url=base_url, key_source=key.source, notes=list(notes))
    if not models:
        return report
    client = make_client(base_url, timeout, transport)
    lock = threading.Condition()
    done: dict[int, SmokeRow | BaseException] = {}
    started: dict[int, float] = {}
    pending = deque(range(len(models)))
    stop: str | None = None  # "key" after a 401, "unreachable" after a refused connection

    def work(i: int) -> None:
        try:
            outcome: SmokeRow | BaseException = check_model(client, models[i], key, timeout, clock)
        except BaseException as exc:  # handed to the caller's thread (a bug, reported in one line)
            outcome = exc
        with lock:
            done[i] = outcome
            lock.notify_all()

    begin = clock()
    deadline = begin + timeout
    key_check_until = begin + min(KEY_CHECK_SECONDS, timeout / 4)
    with lock:
        while True:
            for i, outcome in done.items():
                if isinstance(outcome, BaseException):
                    raise outcome
                if stop is None and outcome.http_status == 401:
                    stop = "key"
                elif stop is None and outcome.result == "unreachable":
                    stop = "unreachable"
            now = clock()
            running = len(started) - len(done)
            if now >= deadline or (running == 0 and (not pending or stop)):
                break
            key_checking = len(started) == 1 and 0 not in done and now < key_check_until
            while pending and stop is None and running < concurrency and not key_checking:
                i = pending.popleft()
                started[i] = clock()
                threading.Thread(target=work, args=(i,), name=f"opsctl-smoke-{i}", daemon=True).start()
                running += 1
                key_checking = i == 0 and clock() < key_check_until
            lock.wait(max(0.0, (key_check_until if key_checking else deadline) - clock()))
        report.rows = [_final_row(i, models[i], done.get(i), started.get(i), stop, deadline, timeout,
                                  concurrency) for i in range(len(models))]
        in_flight = len(started) > len(done)
    if not in_flight:
        client.close()  # else the abandoned requests keep it; their daemon threads end with the process
    rejected = [r for r in report.rows if r.http_status == 401]
    if rejected:
        report.key_rejected = rejected[0].detail
        for row in rejected[1:]:
            row.detail = ""  # the same 401 once, not once per model
    return report


def _final_row(i: int, model: str, outcome: SmokeRow | None, started: float | None, stop: str | None,
               deadline: float, timeout: float, concurrency: int) -> SmokeRow:
    if outcome is not None:
        return outcome
    row = SmokeRow(model=model, approach=approach_of(model))
    if started is not None:  # still running at the deadline
        row.latency_s = round(deadline - started, 3)
        row.detail = f"no answer within --timeout {timeout:g}s"
    elif stop == "unreachable":
        row.result = "unreachable"  # not asked: the other models would only repeat the same line
    elif stop is None:
        row.detail = (f"not started: the run's --timeout {timeout:g}s ran out while the models before it "
                      f"ran ({concurrency} at a time, --concurrency)")
    return row


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def render_table(report: SmokeReport) -> str:
    if report.key_rejected and not any(r.result == "pass" for r in report.rows):
        # Nothing was checked: the one line that says why, not a table of the same failure.
        return f"smoke {report.url}: {report.key_rejected} (no model checked)"
    header = ("MODEL", "RESULT", "LATENCY", "TOKENS", "STRATEGY RAN")
    lines = [header] + [
        (r.model, r.result.upper() if r.result != "pass" else "pass",
         "-" if r.latency_s is None else f"{r.latency_s:.3f}s",
         "-" if r.completion_tokens is None else str(r.completion_tokens), _yes_no(r.strategy_ran))
        for r in report.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out += [f"{r.model}: {r.detail}" for r in report.rows if r.detail]
    out += [f"note: {n}" for n in report.notes]
    passed = sum(r.result == "pass" for r in report.rows)
    skipped = [r.model for r in report.rows if r.result == "skipped"]
    failed = [r.model for r in report.rows if r.result in ("fail", "unreachable")]
    summary = f"smoke {report.url}: {passed}/{len(report.rows)} passed"
    if skipped:
        summary += f"; strategy skipped: {', '.join(skipped)}"
    if failed:
        summary += f"; failed: {', '.join(failed)}"
    refused = [f"{r.model} ({r.policy_rule})" for r in report.rows if r.policy_rule]
    if refused:
        summary += f"; refused by policy: {', '.join(refused)}"
    out.append(summary)
    return "\n".join(out)


def render_json(report: SmokeReport) -> str:
    return json.dumps({"url": report.url, "key_source": report.key_source,
                       "exit_code": report.exit_code, "passed": report.exit_code == PASSED,
                       "key_rejected": report.key_rejected,
                       "rows": [asdict(r) for r in report.rows], "notes": report.notes}, sort_keys=True)
