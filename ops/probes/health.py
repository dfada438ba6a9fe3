"""`opsctl health`: is the proxy up? A Monitoring Plugins style probe (Nagios, Icinga, Zabbix, the unit).

Rule (the spec's): GET /health; when that is not 200 with valid JSON, GET /v1/models with the
proxy key. 200 with valid JSON from either is healthy, and the status line says which one
answered. /health never touches the upstream, so a stopped LiteLLM leaves health OK (that is
`opsctl smoke`'s job to catch). When this host's own proxy gives no HTTP answer, the line also
names a failed unit and its Result (ops/probes/unit_state.py): a start-limit-hit does not heal by itself;
or, when the service is draining, restarting or starting with its socket listening, says so with
systemd's STATUS= line and is a WARNING (the probe's connection waits in the backlog meanwhile).

Exit codes: 0 OK, 1 WARNING (healthy but slower than --warning, or no answer while the local
service drains or restarts), 2 CRITICAL (refused, timed out,
both endpoints failed, 401 on the fallback, non-JSON 200, slower than --critical), 3 UNKNOWN
(bad arguments, internal error). Output: one status line with perfdata
`OPTILLM-PROXY OK - /health 200 in 0.004s | time=0.004s;1;3;0`, or one JSON object (--json).
"""

from __future__ import annotations

import json
import time

from ops.probes.client import ApiKey, ProbeDeadline, run_with_deadline
from ops.probes.http_probe import Answer, ProbeError, Refused, TimedOut, get

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
LABEL = "OPTILLM-PROXY"
WAIT_INTERVAL_S = 0.5


class HealthResult:
    """A plain class, not a dataclass: `dataclasses` imports `inspect`, a real share of a probe's
    start-up (the same holds for the other classes on the health path)."""

    FIELDS = ("message", "url", "elapsed_s", "warning_s", "critical_s", "endpoint", "http_status",
              "attempts", "waited_s")

    def __init__(self, code: int, message: str, url: str, elapsed_s: float, warning_s: float,
                 critical_s: float, endpoint: str | None = None, http_status: int | None = None,
                 attempts: int = 1, waited_s: float | None = None) -> None:
        self.code, self.message, self.url, self.elapsed_s = code, message, url, elapsed_s
        self.warning_s, self.critical_s, self.endpoint = warning_s, critical_s, endpoint
        self.http_status, self.attempts, self.waited_s = http_status, attempts, waited_s

    @property
    def state(self) -> str:
        return STATE_NAMES[self.code]

    def status_line(self) -> str:
        perf = f"time={self.elapsed_s:.3f}s;{self.warning_s:g};{self.critical_s:g};0"
        return f"{LABEL} {self.state} - {self.message} | {perf}"

    def as_json(self) -> str:
        facts = {"state": self.state, "exit_code": self.code,
                 **{name: getattr(self, name) for name in self.FIELDS}}
        return json.dumps(facts, sort_keys=True)


def _describe_failure(path: str, answer: Answer) -> str:
    if answer.status == 200:
        return f"{path} 200 but not JSON"
    return f"{path} {answer.status}"


def _check_endpoints(fetch, key: ApiKey) -> tuple[int, str, str | None, int | None]:
    """(code, message, endpoint, http status) without the latency thresholds."""
    health = fetch("/health", {})
    if health.status == 200 and health.json_ok():
        return OK, "/health 200", "/health", 200
    first = _describe_failure("/health", health)
    models = fetch("/v1/models", key.headers())
    if models.status == 200 and models.json_ok():
        return OK, f"/v1/models 200 ({first})", "/v1/models", 200
    if models.status == 401:
        return (CRITICAL, f"{first}; /v1/models 401: the proxy rejected the key from {key.source} "
                "(pass --api-key or set OPSCTL_API_KEY)", "/v1/models", 401)
    return CRITICAL, f"both endpoints failed: {first}; {_describe_failure('/v1/models', models)}", None, \
        models.status


def _connection_message(exc: ProbeError, url: str, timeout: float) -> str:
    if isinstance(exc, TimedOut):
        return f"no answer from {url} within {timeout:g}s (timed out)"
    if isinstance(exc, Refused):
        return f"connection refused by {url} (is optillm-proxy running? systemctl status optillm-proxy)"
    return f"cannot connect to {url}: {exc}"


def probe_once(base_url: str, key: ApiKey, timeout: float, warning: float, critical: float,
               fetch=None, clock=time.monotonic) -> HealthResult:
    """One probe, bounded by `timeout` seconds in total; never raises for network trouble.
    `fetch(path, headers) -> Answer` is the HTTP GET (tests give their own)."""
    if fetch is None:
        def fetch(path: str, headers: dict[str, str]) -> Answer:
            return get(base_url, path, headers, timeout)
    start = clock()
    try:
        code, message, endpoint, status = run_with_deadline(lambda: _check_endpoints(fetch, key), timeout)
    except ProbeDeadline:
        return HealthResult(CRITICAL, f"no answer from {base_url} within --timeout {timeout:g}s",
                            base_url, clock() - start, warning, critical)
    except ProbeError as exc:
        return HealthResult(CRITICAL, _connection_message(exc, base_url, timeout), base_url,
                            clock() - start, warning, critical)
    elapsed = clock() - start
    result = HealthResult(code, message, base_url, elapsed, warning, critical, endpoint, status)
    if code == OK:
        result.message = f"{message} in {elapsed:.3f}s"
        if elapsed > critical:
            result.code = CRITICAL
            result.message += f" (slower than --critical {critical:g}s)"
        elif elapsed > warning:
            result.code = WARNING
            result.message += f" (slower than --warning {warning:g}s)"
    return result


def probe(base_url: str, key: ApiKey, timeout: float, warning: float, critical: float,
          wait: float = 0.0, fetch=None, clock=time.monotonic, sleep=time.sleep) -> HealthResult:
    """Probe once, or with `wait` > 0 keep probing until healthy (OK or WARNING) or `wait` s passed."""
    if wait <= 0:
        return probe_once(base_url, key, timeout, warning, critical, fetch, clock)
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        remaining = wait - (clock() - start)
        result = probe_once(base_url, key, max(0.1, min(timeout, remaining)), warning, critical,
                            fetch, clock)
        waited = clock() - start
        if result.code in (OK, WARNING) or waited + WAIT_INTERVAL_S > wait:
            break
        sleep(WAIT_INTERVAL_S)
    result.attempts = attempts
    result.waited_s = round(waited, 3)
    if result.code in (OK, WARNING):
        result.message += f" after {attempts} attempt(s) in {waited:.1f}s"
    else:
        result.message += f" (still not healthy after --wait {wait:g}s, {attempts} attempt(s))"
    return result


def validate(timeout: float, warning: float, critical: float, wait: float) -> None:
    from ops.probes.client import UsageProblem

    if timeout <= 0:
        raise UsageProblem(f"--timeout must be > 0 seconds (got {timeout:g})")
    if warning <= 0 or critical <= 0:
        raise UsageProblem("--warning and --critical must be > 0 seconds")
    if warning > critical:
        raise UsageProblem(f"--warning ({warning:g}s) must not exceed --critical ({critical:g}s)")
    if wait < 0:
        raise UsageProblem(f"--wait must be >= 0 seconds (got {wait:g})")


def unknown(message: str, url: str, warning: float = 1.0, critical: float = 3.0) -> HealthResult:
    return HealthResult(UNKNOWN, message, url, 0.0, warning, critical)


# --- the command: its options (the click command in ops/probes/command.py reads this table), the probe
# run both ways, and the fast path opsctl takes for a plain invocation.


class Option:
    def __init__(self, flag: str, dest: str, kind: type, default: object, help: str) -> None:
        self.flag, self.dest, self.help = flag, dest, help
        self.kind, self.default = kind, default  # kind: float, str, or bool for a flag


KEY_HELP = "Proxy key (prefer $OPSCTL_API_KEY or the key file: a command line is visible to all users)."


def options() -> tuple[Option, ...]:
    from ops.from_launcher.layout import PROXY_URL

    return (
        Option("--url", "url", str, PROXY_URL, "Proxy base URL."),
        Option("--api-key", "api_key", str, None, KEY_HELP + " Only sent to /v1/models, when /health fails."),
        Option("--timeout", "timeout", float, 10.0, "Bound on the whole probe, seconds."),
        Option("--warning", "warning", float, 1.0, "WARNING when slower, seconds."),
        Option("--critical", "critical", float, 3.0, "CRITICAL when slower, seconds."),
        Option("--wait", "wait", float, 0.0, "Poll until healthy or this many seconds passed (0: probe once)."),
        Option("--json", "as_json", bool, False, "Print one JSON object instead of the status line."),
    )


def _local_unit_clause(base_url: str, seconds: float) -> tuple[str, bool]:
    """For this host's own proxy that gave no HTTP answer: why systemd has it down, if it does, or
    that it is draining/restarting (True: a WARNING, not a failure), asked within what is left of
    --timeout. A diagnosis that fails adds nothing (the CRITICAL stays)."""
    from ops.from_launcher.layout import PROXY_URL

    if base_url != PROXY_URL:
        return "", False
    from ops.probes import unit_state

    try:
        units = unit_state.read(timeout=seconds)
        clause = unit_state.describe(units)
        moving = "" if clause else unit_state.transition(units)
    except Exception:  # noqa: BLE001 - an extra clause must never turn CRITICAL into UNKNOWN
        return "", False
    if moving:
        return f"; {moving}", True
    return (f"; {clause}" if clause else ""), False


def run(url: str, api_key: str | None, timeout: float, warning: float, critical: float, wait: float,
        as_json: bool) -> tuple[int, str]:
    """(exit code, the one line to print): what `opsctl health` does once its options are parsed."""
    from ops.probes.client import UsageProblem, parse_base_url, resolve_api_key

    try:
        validate(timeout, warning, critical, wait)
        base_url = parse_base_url(url)
        key = resolve_api_key(api_key)
        result = probe(base_url, key, timeout, warning, critical, wait)
        if result.code == CRITICAL and result.http_status is None:
            clause, moving = _local_unit_clause(base_url, max(0.2, timeout - result.elapsed_s))
            result.message += clause
            if moving:
                result.code = WARNING
    except UsageProblem as exc:
        result = unknown(str(exc), url, warning, critical)
    except Exception as exc:  # a probe reports UNKNOWN, never a traceback
        result = unknown(f"internal error: {type(exc).__name__}: {exc}", url, warning, critical)
    return result.code, result.as_json() if as_json else result.status_line()


def parse_plain(args: list[str]) -> dict | None:
    """The options of a plain invocation (`--flag VALUE`, `--flag=VALUE`, `--json`), as click would
    parse them; None for anything else (help, a typo, a bad number), which click then parses and
    reports as it always does. Monitoring runs the plain form every minute; click's import alone
    costs more than a curl of /health."""
    table = {o.flag: o for o in options()}
    values = {o.dest: o.default for o in table.values()}
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        option = table.get(flag)
        if option is None:
            return None
        if option.kind is bool:
            if eq:
                return None
            values[option.dest] = True
            i += 1
            continue
        if eq:
            raw, i = inline, i + 1
        elif i + 1 < len(args):
            raw, i = args[i + 1], i + 2
        else:
            return None
        if raw.startswith("--"):  # a missing value, or one click would take differently
            return None
        if option.kind is float:
            try:
                values[option.dest] = float(raw)
            except ValueError:
                return None
        else:
            values[option.dest] = raw
    return values


def fast_main(args: list[str]) -> int | None:
    """Run `opsctl health ARGS` without click; None when click must parse ARGS (see parse_plain)."""
    values = parse_plain(args)
    if values is None:
        return None
    code, line = run(**values)
    try:
        print(line, flush=True)
    except OSError:  # stdout closed or a reader gone: the exit code still tells the state
        pass
    return code
