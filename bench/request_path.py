"""The request path of stock optillm 0.3.12 against the launcher, side by side, from one runtime venv.

Usage: uv run python bench/request_path.py --venv PATH [--requests N] [--json]
       (e.g. --venv /tmp/leanrt, or a runtime under /opt/optillm-proxy/runtimes/)
       uv run python bench/request_path.py --venv PATH --baseline-launcher CHECKOUT
       (the "stock" column becomes the launcher of another checkout, e.g. a worktree of another
       commit: two launchers side by side in one run, same venv, same settings)

Starts the recording upstream (tools.fake_upstream, a subprocess on a free loopback port) and, from
the same venv, stock `optillm` and the launcher (launcher/optillm-proxy-launcher.py, as the unit
runs it: python -I, the key from CREDENTIALS_DIRECTORY, a clean environment, default settings),
then measures, stock and launcher alternately for each figure:

  cpu ms/request     server CPU (utime+stime from /proc/PID/stat, all threads) over N sequential
                     pass-through requests (model jerry-xl, upstream answering at once), divided
                     by N, after 5 warm-up requests. Stock builds an httpx client (a new SSL context
                     with the CA bundle) per request; the launcher reuses one. Goal: launcher <= 5.
  throughput         requests/s answered 200 with 16 and with 64 concurrent clients (threads on
                     one keep-alive httpx client), pass-through, the upstream answering after 50 ms;
                     a bounded number of requests per level and a wall-clock cap. The bench client
                     and the upstream share the machine's cores with the server: on a 2-core box
                     this is what the server sustains next to them, not its ceiling.
  peak RSS           VmHWM of a fresh server process that served 3 warm-up moa-jerry-xl requests
                     and then one burst of 256 concurrent moa-jerry-xl requests (upstream at 50 ms,
                     so they overlap). Stock loads every bundled plugin the venv can import; the
                     launcher loads none (PROXY_PLUGINS=none, the unit's default). Goal: launcher
                     <= 250 MB (238 MiB).
  records            CPU per pass-through request of the launcher with its per-request record and
                     metrics (PROXY_RECORDS=journal: a journald record under systemd, a stderr line
                     here, where no journal is attached) against a second launcher with
                     PROXY_RECORDS=off; goal: the record costs <= 1 ms.
  fan-out            upstream chat completion calls per moa/bon/plansearch/self_consistency request
                     (the upstream's /_calls, reset before each); both must show 3/4/4/5.

Reading the table: ratio is launcher / stock, so below 1 is better for CPU and memory, above 1 is
better for throughput. "errors" counts answers other than 200 and transport errors over every
phase; any there are listed under the table with the server's log tail. Figures depend on a
shared machine: quote them with their date, not as limits. Not a test: nothing here fails on a
figure. Exit codes: 0 figures printed, 1 a step failed (a server did not start or died), 2 usage.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "launcher")]
from optillm_proxy_launcher.layout import BASE_MODEL, LAUNCHER_REL, OPTILLM_VERSION, STRATEGY_PREFIXES  # noqa: E402

LAUNCHER = REPO / "launcher" / Path(LAUNCHER_REL).name
MODEL = BASE_MODEL
MESSAGES = [{"role": "user", "content": "What is 6*7?"}]
UPSTREAM_KEY = "bench-upstream-key"
FANOUT = {"moa": 3, "bon": 4, "plansearch": 4, "self_consistency": 5}  # what 0.3.12 makes per request
assert set(FANOUT) == set(STRATEGY_PREFIXES), "a routed strategy without its fan-out figure"
UPSTREAM_DELAY_SECONDS = 0.05
LOAD_LEVELS = (16, 64)
WARMUP_REQUESTS = 5
RSS_WARMUP_REQUESTS = 3
HEALTH_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 120.0  # one request, under the phase's cap; stock queues long behind the GIL
CPU_GOAL_MS = 5.0
RSS_GOAL_BYTES = 250e6
VARIANTS = ("stock", "launcher")
# --baseline-launcher: the checkout whose launcher takes the "stock" column, and the column's label.
BASELINE: Path | None = None
LABELS = {"stock": "stock", "launcher": "launcher"}


class StepFailed(Exception):
    """A step the figures depend on did not happen (a server did not start, or died)."""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise StepFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the session it was started in (only what we started), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        else:
            # The leader is gone; a child it left behind in its session still gets the signal.
            _signal_group(self.proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Load:
    """What one batch of requests got: statuses, latencies, wall time, whether the cap cut it short."""

    sent: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    wall: float = 0.0
    capped: bool = False
    samples: list[str] = field(default_factory=list)  # a few error answers, as the client saw them

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name: str, argv: list[str], env: dict, cwd: Path, log_path: Path, port: int,
          started: list[Server]) -> Server:
    with open(log_path, "wb") as log:
        # Own session: stop() signals exactly this process and what it started, nothing else.
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, proc, port, log_path)
    started.append(server)
    return server


def start_upstream(work: Path, started: list[Server]) -> Server:
    port = free_port()
    return spawn("upstream", [sys.executable, "-m", "tools.fake_upstream", str(port)], dict(os.environ), REPO,
                 work / "upstream.log", port, started)


def start_variant(variant: str, venv: Path, work: Path, upstream: Server, key: str, tag: str,
                  started: list[Server], extra_env: dict | None = None) -> Server:
    """Stock optillm or the launcher, each in its own HOME and cwd, with a clean environment."""
    port = free_port()
    root = work / f"{variant}-{tag}"
    (root / "home").mkdir(parents=True)
    (root / "cwd").mkdir()
    # Nothing inherited: an OPTILLM_* variable makes the launcher refuse (78) and changes stock.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root / "home"), "LANG": "C.UTF-8"}
    flags = ["--host", "127.0.0.1", "--port", str(port), "--base-url", f"{upstream.url}/v1", "--model", MODEL]
    if variant == "stock" and BASELINE is None:
        env["OPENAI_API_KEY"] = UPSTREAM_KEY  # stock reads it there; the launcher refuses a key in the environment
        argv = [str(venv / "bin" / "optillm"), *flags, "--optillm-api-key", key]
    else:
        # Both keys as systemd credentials, as the unit delivers them.
        credentials = root / "credentials"
        credentials.mkdir(mode=0o700)
        (credentials / "api-key").write_text(key + "\n")
        (credentials / "upstream-key").write_text(UPSTREAM_KEY + "\n")
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        env.update(extra_env or {})
        launcher = BASELINE / "launcher" / LAUNCHER.name if variant == "stock" else LAUNCHER
        argv = [str(venv / "bin" / "python"), "-I", str(launcher), *flags]
    return spawn(f"{variant} ({tag})", argv, env, root / "cwd", root / "server.log", port, started)


def wait_healthy(server: Server, timeout: float = HEALTH_TIMEOUT_SECONDS) -> float:
    from ops.probes.http_probe import wait_healthy as poll

    took = poll(server.url, timeout, check=server.check_alive)
    if took is not None:
        return took
    raise StepFailed(f"{server.name} did not answer /health with 200 within {timeout:g} s:\n{server.log_tail()}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread, finished ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name, which is in parentheses and may itself hold spaces.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise StepFailed(f"/proc/{pid}/status has no {name}")


# ---------------------------------------------------------------------------------------------
# Requests


def upstream_control(upstream: Server, method: str, path: str, body: dict | None = None):
    response = httpx.request(method, f"{upstream.url}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def set_delay(upstream: Server, seconds: float) -> None:
    # /_reset also forgets the recorded calls, so the upstream's memory stays small between phases.
    upstream_control(upstream, "POST", "/_reset", {})
    if seconds:
        upstream_control(upstream, "POST", "/_delay", {"seconds": seconds})


def chat(client: httpx.Client, server: Server, key: str, model: str, timeout: float) -> tuple[str, str]:
    """(status, error text) of one chat completion; status is the HTTP code or the exception name."""
    try:
        response = client.post(f"{server.url}/v1/chat/completions", timeout=timeout,
                               headers={"Authorization": f"Bearer {key}"},
                               json={"model": model, "messages": MESSAGES, "max_tokens": 50})
    except httpx.HTTPError as exc:
        return type(exc).__name__, str(exc)[:300]
    if response.status_code == 200:
        return "200", ""
    return str(response.status_code), response.text[:300]


def run_load(server: Server, key: str, model: str, total: int, concurrency: int, cap: float) -> Load:
    """`total` requests from `concurrency` threads, all starting together; stops at `cap` seconds."""
    load = Load()
    lock = threading.Lock()
    next_index = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start_gate = threading.Barrier(concurrency + 1)
    stop = threading.Event()  # set when run_load returns or is interrupted: no thread starts another request
    with httpx.Client(limits=limits) as client:
        deadline = [0.0]

        def worker() -> None:
            try:
                start_gate.wait(30)
            except threading.BrokenBarrierError:
                return
            while not stop.is_set():
                left = deadline[0] - time.monotonic()
                with lock:
                    if next_index[0] >= total or left <= 0:
                        return
                    next_index[0] += 1
                begun = time.monotonic()
                try:
                    status, error = chat(client, server, key, model, min(REQUEST_TIMEOUT_SECONDS, left))
                except Exception as exc:  # noqa: BLE001 - counted, never a silently dead thread
                    if stop.is_set():
                        return  # the client was closed under it (Ctrl-C): nothing to count
                    status, error = type(exc).__name__, str(exc)[:300]
                took = time.monotonic() - begun
                with lock:
                    load.sent += 1
                    load.statuses[status] += 1
                    if status == "200":
                        load.latencies.append(took)
                    elif len(load.samples) < 3:
                        load.samples.append(f"{status}: {error}")

        # Daemon threads: a Ctrl-C leaves them behind (each bounded by its request timeout).
        threads = [threading.Thread(target=worker, daemon=True, name=f"load-{i}") for i in range(concurrency)]
        try:
            for thread in threads:
                thread.start()
            start = time.monotonic()
            deadline[0] = start + cap
            start_gate.wait(30)
            for thread in threads:
                thread.join(max(0.0, deadline[0] + 5 - time.monotonic()))
            load.wall = time.monotonic() - start
            load.capped = load.sent < total or any(t.is_alive() for t in threads)
        finally:
            stop.set()
    return load


def sequential(server: Server, key: str, model: str, count: int, cap: float) -> Load:
    return run_load(server, key, model, count, 1, cap)


# ---------------------------------------------------------------------------------------------
# Phases: each returns {variant: figure}; problems collects what went wrong, with log tails


class Problems(list):
    def note(self, server: Server, phase: str, load: Load) -> None:
        if load.errors or load.capped:
            self.append({"server": server.name, "phase": phase, "sent": load.sent, "ok": load.ok,
                         "statuses": dict(load.statuses), "capped": load.capped,
                         "samples": load.samples, "log_tail": server.log_tail()})


def phase_fanout(servers: dict[str, Server], upstream: Server, key: str, problems: Problems) -> dict:
    figures = {}
    for variant, server in servers.items():
        counts = {}
        for approach in FANOUT:
            set_delay(upstream, 0)
            load = sequential(server, key, f"{approach}-{MODEL}", 1, REQUEST_TIMEOUT_SECONDS)
            problems.note(server, f"fan-out {approach}", load)
            calls = upstream_control(upstream, "GET", "/_calls")
            counts[approach] = sum(1 for c in calls if c["path"].endswith("/chat/completions"))
        server.check_alive()
        figures[variant] = counts
    return figures


def phase_cpu(servers: dict[str, Server], upstream: Server, key: str, count: int, cap: float,
              problems: Problems) -> dict:
    set_delay(upstream, 0)
    figures = {}
    for variant, server in servers.items():
        # The first requests import what optillm loads lazily; that is start-up, not the request path.
        problems.note(server, "cpu warm-up", sequential(server, key, MODEL, WARMUP_REQUESTS, cap))
        before = cpu_seconds(server.pid)
        load = sequential(server, key, MODEL, count, cap)
        used = cpu_seconds(server.pid) - before
        problems.note(server, "cpu", load)
        server.check_alive()
        figures[variant] = {"ms_per_request": 1000 * used / max(load.sent, 1), "requests": load.sent,
                            "cpu_seconds": used}
    return figures


def phase_records(launcher: Server, venv: Path, work: Path, upstream: Server, key: str, count: int, cap: float,
                  started: list[Server], problems: Problems) -> dict:
    """The launcher's per-request record (one structured line; journald under systemd, stderr
    here) and metrics update: CPU per pass-through request with PROXY_RECORDS=journal and =off."""
    off = start_variant("launcher", venv, work, upstream, key, "records-off", started, {"PROXY_RECORDS": "off"})
    wait_healthy(off)
    figures = phase_cpu({"on": launcher, "off": off}, upstream, key, count, cap, problems)
    off.stop()
    figures["cost_ms"] = figures["on"]["ms_per_request"] - figures["off"]["ms_per_request"]
    return figures


def phase_throughput(servers: dict[str, Server], upstream: Server, key: str, total: int, concurrency: int,
                     cap: float, problems: Problems) -> dict:
    figures = {}
    for variant, server in servers.items():
        set_delay(upstream, UPSTREAM_DELAY_SECONDS)
        load = run_load(server, key, MODEL, total, concurrency, cap)
        problems.note(server, f"throughput x{concurrency}", load)
        server.check_alive()
        latencies = sorted(load.latencies)
        figures[variant] = {
            "requests_per_second": load.rate(), "ok": load.ok, "sent": load.sent, "wall_seconds": load.wall,
            "capped": load.capped,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        }
    set_delay(upstream, 0)
    return figures


def phase_rss(venv: Path, work: Path, upstream: Server, key: str, burst: int, cap: float,
              started: list[Server], problems: Problems) -> dict:
    """A fresh process per variant, one at a time, so the burst is all it served besides warm-up."""
    figures = {}
    for variant in VARIANTS:
        server = start_variant(variant, venv, work, upstream, key, "rss", started)
        try:
            wait_healthy(server)
            set_delay(upstream, 0)
            problems.note(server, "rss warm-up",
                          sequential(server, key, f"moa-{MODEL}", RSS_WARMUP_REQUESTS, cap))
            before = status_kib(server.pid, "VmHWM")
            set_delay(upstream, UPSTREAM_DELAY_SECONDS)
            load = run_load(server, key, f"moa-{MODEL}", burst, burst, cap)
            problems.note(server, f"rss burst x{burst}", load)
            server.check_alive()
            figures[variant] = {"peak_kib": status_kib(server.pid, "VmHWM"), "before_burst_kib": before,
                                "after_kib": status_kib(server.pid, "VmRSS"), "ok": load.ok, "sent": load.sent,
                                "wall_seconds": load.wall}
        finally:
            server.stop()
            set_delay(upstream, 0)
    return figures


# ---------------------------------------------------------------------------------------------
# Report


def ratio(stock: float | None, launcher: float | None) -> str:
    if not stock or launcher is None:
        return "-"
    return f"{launcher / stock:.2f}x"


def table(result: dict) -> str:
    cpu, rss, fan = result["cpu"], result["rss"], result["fanout"]
    a, b = LABELS["stock"], LABELS["launcher"]
    rows = [("metric", a, b, f"ratio ({b}/{a})"), ("---", "---:", "---:", "---:")]
    s, l = cpu["stock"]["ms_per_request"], cpu["launcher"]["ms_per_request"]
    rows.append((f"CPU per pass-through request, ms ({cpu['launcher']['requests']} sequential; "
                 f"goal launcher <= {CPU_GOAL_MS:g})", f"{s:.1f}", f"{l:.1f}", ratio(s, l)))
    for level in LOAD_LEVELS:
        t = result["throughput"][str(level)]
        s, l = t["stock"]["requests_per_second"], t["launcher"]["requests_per_second"]
        capped = " (capped)" if t["stock"]["capped"] or t["launcher"]["capped"] else ""
        rows.append((f"throughput, {level} clients, upstream 50 ms, req/s{capped}", f"{s:.1f}", f"{l:.1f}",
                     ratio(s, l)))
        rows.append((f"  p50 / p95 latency at {level} clients, ms",
                     _pair(t["stock"]), _pair(t["launcher"]), "-"))
    s, l = rss["stock"]["peak_kib"] / 1024, rss["launcher"]["peak_kib"] / 1024
    rows.append((f"peak RSS (VmHWM) after {result['settings']['burst']} concurrent moa-{MODEL}, MiB "
                 f"(goal launcher <= 238 MiB = 250 MB)", f"{s:.0f}", f"{l:.0f}", ratio(s, l)))
    s, l = rss["stock"]["before_burst_kib"] / 1024, rss["launcher"]["before_burst_kib"] / 1024
    rows.append(("  VmHWM after warm-up, before the burst, MiB", f"{s:.0f}", f"{l:.0f}", ratio(s, l)))
    want = "/".join(str(v) for v in FANOUT.values())
    fs, fl = ("/".join(str(fan[v][a]) for a in FANOUT) for v in VARIANTS)
    rows.append((f"upstream calls per {'/'.join(FANOUT)} (want {want})", fs, fl,
                 "same" if fs == fl == want else "DIFFERS"))
    rows.append(("errors (non-200 or transport errors, all phases)",
                 str(result["errors"]["stock"]), str(result["errors"]["launcher"]), "-"))
    return "\n".join(f"| {' | '.join(row)} |" for row in rows)


def _pair(figure: dict) -> str:
    if figure["p50_ms"] is None:
        return "-"
    return f"{figure['p50_ms']:.0f} / {figure['p95_ms']:.0f}"


def goals(result: dict) -> list[str]:
    cpu = result["cpu"]["launcher"]["ms_per_request"]
    rss = result["rss"]["launcher"]["peak_kib"] * 1024
    fan = all(result["fanout"][v] == FANOUT for v in VARIANTS)
    rec = result["records"]
    cost = rec["cost_ms"]
    return [f"launcher CPU per request {cpu:.1f} ms: {'met' if cpu <= CPU_GOAL_MS else 'MISSED'} (<= {CPU_GOAL_MS:g})",
            f"per-request record (PROXY_RECORDS=journal; a stderr line outside systemd) vs off: "
            f"{rec['on']['ms_per_request']:.2f} vs {rec['off']['ms_per_request']:.2f} ms CPU, "
            f"cost {cost:+.2f} ms: {'met' if cost <= 1 else 'MISSED'} (<= 1)",
            f"launcher peak RSS {rss / 1e6:.0f} MB: {'met' if rss <= RSS_GOAL_BYTES else 'MISSED'} (<= 250 MB)",
            f"fan-out 3/4/4/5 on both: {'met' if fan else 'MISSED'}"]


def optillm_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('optillm'))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", required=True, type=Path, help=f"runtime venv with optillm {OPTILLM_VERSION}")
    parser.add_argument("--requests", type=int, default=100,
                        help="sequential pass-through requests for the CPU figure (default 100)")
    parser.add_argument("--load-requests", type=int, default=400,
                        help="requests per throughput level (default 400)")
    parser.add_argument("--burst", type=int, default=256, help="concurrent moa requests for peak RSS (default 256)")
    parser.add_argument("--cap", type=float, default=120.0,
                        help="wall-clock cap of each phase per server, seconds (default 120)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--baseline-launcher", type=Path, metavar="CHECKOUT",
                        help="compare against the launcher of this checkout instead of stock optillm")
    args = parser.parse_args()
    if args.baseline_launcher is not None:
        if not (args.baseline_launcher / "launcher" / LAUNCHER.name).exists():
            parser.error(f"{args.baseline_launcher / 'launcher' / LAUNCHER.name} does not exist: "
                         "--baseline-launcher must be a checkout of this repository")
        global BASELINE
        BASELINE = args.baseline_launcher.resolve()
        LABELS.update(stock=f"baseline ({BASELINE.name})", launcher="this launcher")
    for name in ("requests", "load_requests", "burst"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} wants a positive integer")
    if args.cap <= 0:
        parser.error("--cap wants a positive number of seconds")
    for exe in ("optillm", "python"):
        if not (args.venv / "bin" / exe).exists():
            parser.error(f"{args.venv / 'bin' / exe} does not exist: --venv must be a runtime venv")
    args.venv = args.venv.resolve()
    return args


def on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the same cleanup as Ctrl-C


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    key = f"bench-proxy-{secrets.token_urlsafe(24)}"  # never sk-: the launcher refuses those
    work = Path(tempfile.mkdtemp(prefix="bench-request-path."))
    started: list[Server] = []
    problems = Problems()
    began = time.monotonic()
    try:
        upstream = start_upstream(work, started)
        wait_healthy(upstream, 30)
        # Both long-lived servers start together (the idle one costs nothing while the other runs).
        servers = {v: start_variant(v, args.venv, work, upstream, key, "main", started) for v in VARIANTS}
        ready = {v: wait_healthy(s) for v, s in servers.items()}
        result = {"venv": str(args.venv), "optillm": optillm_version(args.venv),
                  "settings": {"requests": args.requests, "load_requests": args.load_requests,
                               "burst": args.burst, "cap_seconds": args.cap,
                               "upstream_delay_seconds": UPSTREAM_DELAY_SECONDS, "cpus": os.cpu_count()},
                  "ready_seconds": ready}
        result["fanout"] = phase_fanout(servers, upstream, key, problems)
        result["cpu"] = phase_cpu(servers, upstream, key, args.requests, args.cap, problems)
        result["records"] = phase_records(servers["launcher"], args.venv, work, upstream, key, args.requests,
                                          args.cap, started, problems)
        result["throughput"] = {str(level): phase_throughput(servers, upstream, key, args.load_requests, level,
                                                             args.cap, problems) for level in LOAD_LEVELS}
        for server in servers.values():
            server.stop()
        result["rss"] = phase_rss(args.venv, work, upstream, key, args.burst, args.cap, started, problems)
    except StepFailed as exc:
        print(f"request_path.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("request_path.py: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["errors"] = {v: sum(sum(n for s, n in p["statuses"].items() if s != "200")
                               for p in problems if p["server"].startswith(v)) for v in VARIANTS}
    result["problems"] = problems
    result["goals"] = goals(result)
    result["wall_seconds"] = time.monotonic() - began
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"optillm {result['optillm']} from {result['venv']}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; whole run {result['wall_seconds']:.0f} s")
    print()
    print(table(result))
    print()
    for line in result["goals"]:
        print(f"- {line}")
    for p in problems:
        print(f"\n## {p['server']}, {p['phase']}: {p['ok']} of {p['sent']} answered 200"
              f"{' (cut by the cap)' if p['capped'] else ''}; statuses {p['statuses']}")
        for sample in p["samples"]:
            print(f"    {sample}")
        print("  server log tail:")
        print("\n".join(f"    {line}" for line in p["log_tail"].splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
