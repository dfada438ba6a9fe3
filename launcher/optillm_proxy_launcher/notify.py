"""systemd notification (sd_notify protocol, no dependency) and the watchdog that feeds on /health.

READY=1 goes out only once /health really answers (Type=notify), with a STATUS= line; WATCHDOG=1
only while /health keeps answering, so a hung server is aborted and restarted by systemd.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.request

from optillm_proxy_launcher.settings import ROUTED_STRATEGIES

HEALTH_POLL_SECONDS = 0.2
HEALTH_TIMEOUT_SECONDS = 2.0
# The launcher's own /health probes carry this query (the route ignores it): they can be told
# apart from an operator's in a trace or a proxy's log.
PROBE_QUERY = "probe=optillm-proxy-launcher"


class Notifier:
    """Datagrams to $NOTIFY_SOCKET; failures are reported once and never reach the server."""

    def __init__(self, address: str | None):
        self._warned = False
        self.status = ""  # the last STATUS= sent: what a refused reload puts back
        self.retarget(address)

    def retarget(self, address: str | None) -> None:
        """Send to `address` from now on (None: send nothing, e.g. once another process is main)."""
        self.address = address
        if address and address.startswith("@"):
            self.address = "\0" + address[1:]  # abstract socket namespace

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        for line in message.splitlines():
            if line.startswith("STATUS=") and not line.startswith("STATUS=reloading"):
                self.status = line[len("STATUS="):]
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(f"optillm-proxy-launcher: cannot notify systemd at {self.address!r}: {exc}",
                      file=sys.stderr, flush=True)
            return False


def health_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200 and json.load(resp).get("status") == "ok"
    except Exception:  # refused, timed out, half-started server: all mean "not healthy yet"
        return False


def watchdog_interval(environ: dict[str, str]) -> float | None:
    """Seconds of WatchdogSec= meant for this process, or None."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def status_line(server, address: str, expected: list[str] = (), approaches=()) -> str:
    """What `systemctl status` shows: the approaches the policy lets through (PROXY_APPROACHES,
    the routed strategies first), not every approach optillm knows, and the plugins loaded."""
    loaded = sorted(server.plugin_approaches)
    plugins = f"{len(loaded)} plugin(s): {', '.join(loaded)}" if loaded else "0 plugins"
    failed = [slug for slug in expected if slug not in loaded]
    if failed:
        # Stock loading (PROXY_PLUGINS=all) logs a failed plugin and goes on; say so where operators look.
        plugins += f"; FAILED to load: {', '.join(failed)} (see the journal)"
    allowed = [s for s in ROUTED_STRATEGIES if s in approaches] + sorted(set(approaches) - set(ROUTED_STRATEGIES))
    prefixes = ", ".join(f"{a}-" for a in allowed) or "none (base model only)"
    return f"serving {address}; approaches by model prefix: {prefixes}; {plugins}"


def supervise(server, notifier: Notifier, host: str, port: int, interval: float | None,
              stop: threading.Event | None = None, expected: list[str] = (), approaches=()) -> None:
    """Background thread: READY=1 once /health answers, then watchdog pings while it keeps answering."""
    stop = stop or threading.Event()
    poll_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in poll_host:
        poll_host = f"[{poll_host}]"
    address = f"http://{poll_host}:{port}"
    url = f"{address}/health?{PROBE_QUERY}"
    while not health_ok(url, HEALTH_TIMEOUT_SECONDS):
        if stop.wait(HEALTH_POLL_SECONDS):
            return
    status = status_line(server, address, expected, approaches)
    notifier.send(f"READY=1\nSTATUS={status}")
    if interval is None:
        return
    period = interval / 2
    # /health must answer well inside the period, or this ping is skipped; two misses in a row
    # exceed WatchdogSec and systemd aborts and restarts the service.
    bound = max(0.5, min(5.0, period / 2))
    healthy = True
    next_ping = time.monotonic()
    while not stop.is_set():
        if health_ok(url, bound):
            notifier.send("WATCHDOG=1" if healthy else f"WATCHDOG=1\nSTATUS={status}")
            healthy = True
        elif healthy:
            healthy = False
            notifier.send(f"STATUS=/health did not answer within {bound:g} s: watchdog not fed")
        # After a stall (stopped process, slow probe) resume the cadence instead of catching up.
        next_ping = max(next_ping + period, time.monotonic())
        stop.wait(next_ping - time.monotonic())

