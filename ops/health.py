"""`opsctl health`: is the proxy up? A Monitoring Plugins style probe (Nagios, Icinga, Zabbix, the unit).

Rule (the spec's): GET /health; when that is not 200 with valid JSON, GET /v1/models with the
proxy key. 200 with valid JSON from either is healthy, and the status line says which one
answered. /health never touches the upstream, so a stopped LiteLLM leaves health OK (that is
`opsctl smoke`'s job to catch).

Exit codes: 0 OK, 1 WARNING (healthy but slower than --warning), 2 CRITICAL (refused, timed out,
both endpoints failed, 401 on the fallback, non-JSON 200, slower than --critical), 3 UNKNOWN
(bad arguments, internal error). Output: one status line with perfdata
`OPTILLM-PROXY OK - /health 200 in 0.004s | time=0.004s;1;3;0`, or one JSON object (--json).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ops.client import ApiKey, ProbeDeadline, run_with_deadline

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
LABEL = "OPTILLM-PROXY"
WAIT_INTERVAL_S = 0.5


@dataclass
class HealthResult:
    code: int
    message: str
    url: str
    elapsed_s: float
    warning_s: float
    critical_s: float
    endpoint: str | None = None
    http_status: int | None = None
    attempts: int = 1
    waited_s: float | None = None

    @property
    def state(self) -> str:
        return STATE_NAMES[self.code]

    def status_line(self) -> str:
        perf = f"time={self.elapsed_s:.3f}s;{self.warning_s:g};{self.critical_s:g};0"
        return f"{LABEL} {self.state} - {self.message} | {perf}"

    def as_json(self) -> str:
        facts = {"state": self.state, "exit_code": self.code, **asdict(self)}
        facts.pop("code")
        return json.dumps(facts, sort_keys=True)


def _json_ok(response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True


def _describe_failure(path: str, response) -> str:
    if response.status_code == 200:
        return f"{path} 200 but not JSON"
    return f"{path} {response.status_code}"


def _check_endpoints(client, key: ApiKey) -> tuple[int, str, str | None, int | None]:
    """(code, message, endpoint, http status) without the latency thresholds."""
    health = client.get("/health")
    if health.status_code == 200 and _json_ok(health):
        return OK, "/health 200", "/health", 200
    first = _describe_failure("/health", health)
    models = client.get("/v1/models", headers=key.headers())
    if models.status_code == 200 and _json_ok(models):
        return OK, f"/v1/models 200 ({first})", "/v1/models", 200
    if models.status_code == 401:
        return (CRITICAL, f"{first}; /v1/models 401: the proxy rejected the key from {key.source} "
                "(pass --api-key or set OPSCTL_API_KEY)", "/v1/models", 401)
    return CRITICAL, f"both endpoints failed: {first}; {_describe_failure('/v1/models', models)}", None, \
        models.status_code


def _connection_message(exc, url: str, timeout: float) -> str:
    from ops.client import import_httpx

    httpx = import_httpx()

    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {url} within {timeout:g}s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        if "refused" in reason.lower():
            return f"connection refused by {url} (is optillm-proxy running? systemctl status optillm-proxy)"
        return f"cannot connect to {url}: {reason}"
    return f"{type(exc).__name__} talking to {url}: {exc}"


def probe_once(base_url: str, key: ApiKey, timeout: float, warning: float, critical: float,
               transport=None, clock=time.monotonic) -> HealthResult:
    """One probe, bounded by `timeout` seconds in total; never raises for network trouble."""
    from ops.client import import_httpx, make_client

    httpx = import_httpx()
    # Built before the clock starts: its imports are opsctl's cost, not the proxy's latency.
    client = make_client(base_url, timeout, transport)
    start = clock()
    try:
        code, message, endpoint, status = run_with_deadline(lambda: _check_endpoints(client, key), timeout)
    except ProbeDeadline:
        return HealthResult(CRITICAL, f"no answer from {base_url} within --timeout {timeout:g}s",
                            base_url, clock() - start, warning, critical)
    except httpx.HTTPError as exc:
        return HealthResult(CRITICAL, _connection_message(exc, base_url, timeout), base_url,
                            clock() - start, warning, critical)
    finally:
        client.close()  # a request still hanging in the worker fails there, unseen
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
          wait: float = 0.0, transport=None, clock=time.monotonic, sleep=time.sleep) -> HealthResult:
    """Probe once, or with `wait` > 0 keep probing until healthy (OK or WARNING) or `wait` s passed."""
    if wait <= 0:
        return probe_once(base_url, key, timeout, warning, critical, transport, clock)
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        remaining = wait - (clock() - start)
        result = probe_once(base_url, key, max(0.1, min(timeout, remaining)), warning, critical,
                            transport, clock)
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
    from ops.client import UsageProblem

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
