"""The one small HTTP helper the probes share: the proxy URL, the proxy key, and a deadline.

Light on purpose: `opsctl health` runs every minute, so this module imports only the stdlib at
load time and httpx when a client is really built.

Key order (first found wins): `--api-key`, `$OPSCTL_API_KEY`, the key file
(`ops.from_launcher.layout.DEFAULT.key_file`, /etc/optillm-proxy/api-key) when the caller may read it.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

from ops.from_launcher.layout import DEFAULT, PROXY_URL

KEY_ENV = "OPSCTL_API_KEY"
DEFAULT_URL = PROXY_URL


class UsageProblem(Exception):
    """Bad input from the operator: reported as one line, exit code 3 (UNKNOWN / usage)."""


class ProbeDeadline(Exception):
    """The whole probe did not finish within its time budget."""


def parse_base_url(url: str) -> str:
    """Validate the proxy URL and return it as `scheme://host[:port]` (a trailing /v1 is dropped).

    Raises UsageProblem with a message that says how to fix the URL.
    """
    text = (url or "").strip()
    hint = f"give it as http://HOST:PORT, e.g. --url {PROXY_URL}"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise UsageProblem(f"invalid --url {text!r}: {exc}; {hint}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageProblem(f"invalid --url {text!r}: scheme must be http or https; {hint}")
    if not parts.hostname:
        raise UsageProblem(f"invalid --url {text!r}: no host; {hint}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageProblem(f"invalid --url {text!r}: no credentials, query or fragment allowed; {hint}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{path}"


class ApiKey:
    """Plain class: no `dataclasses` import on the health path (see ops.probes.health.HealthResult)."""

    def __init__(self, value: str | None, source: str) -> None:
        self.value = value
        self.source = source  # where it came from, for messages (never the key itself)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and (self.value, self.source) == (other.value, other.source)

    def __repr__(self) -> str:
        return f"ApiKey(<{'set' if self.value else 'none'}>, {self.source!r})"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


def resolve_api_key(cli_key: str | None, environ=None, key_file=None) -> ApiKey:
    environ = os.environ if environ is None else environ
    key_file = DEFAULT.key_file if key_file is None else key_file
    if cli_key is not None:
        if not cli_key.strip():
            raise UsageProblem("--api-key is empty; pass the proxy key, or leave the option out to "
                               f"use ${KEY_ENV} or {key_file}")
        return ApiKey(cli_key.strip(), "--api-key")
    if environ.get(KEY_ENV, "").strip():
        return ApiKey(environ[KEY_ENV].strip(), f"${KEY_ENV}")
    try:
        first_line = key_file.read_text().splitlines()[0].strip() if key_file.is_file() else ""
    except (OSError, IndexError, UnicodeDecodeError):
        # Not readable by this user (e.g. a monitoring agent): /health needs no key anyway.
        first_line = ""
    if first_line:
        return ApiKey(first_line, str(key_file))
    return ApiKey(None, f"none (no --api-key, no ${KEY_ENV}, {key_file} not readable)")


def import_httpx():
    """httpx, without its optional command-line client: `httpx/__init__` imports `httpx._main`,
    which pulls in pygments and rich (~50 ms) whenever they happen to be installed. A None entry
    in sys.modules makes that import fail the way httpx expects when they are absent."""
    import sys

    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)
    import httpx

    return httpx


def make_client(base_url: str, timeout: float, transport=None):
    """An httpx client for the proxy; per-operation timeouts are capped by the probe's budget."""
    httpx = import_httpx()

    if transport is None:
        # Plain http (the loopback proxy) needs no CA bundle: skipping it saves loading certifi's
        # ~150 KB of certificates on every run of a once-a-minute probe.
        transport = httpx.HTTPTransport(verify=not base_url.startswith("http://"), retries=0)
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout), transport=transport,
                        follow_redirects=False, trust_env=False)


def run_with_deadline(func, seconds: float):
    """Run func() but give up after `seconds` in total (httpx's timeouts are per read, so a server
    that trickles bytes could otherwise hold a probe far past --timeout).

    The worker is a daemon thread: a probe that gave up exits without waiting for it.
    """
    outcome: dict = {}

    def worker() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="opsctl-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ProbeDeadline(f"no answer within {seconds:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
