"""Resident memory per request body byte, per routed approach: what ADMIT_BODY_BYTES is sized from.

Usage: uv run python bench/memory_per_byte.py --venv PATH [--concurrent N] [--body-mb MB] [--json]

For the base model and each routed strategy (moa, bon, plansearch, self_consistency), a fresh
launcher from the venv (PROXY_PLUGINS=none, admission opened wide: ADMIT_BODY_BYTES=1 GiB,
SERVER_THREADS=64) serves 3 small warm-up requests; then N concurrent requests (default 16) with a
prompt of MB megabytes each (default 3.9) while the recording upstream answers after 1 s, so all
N are inside the app at once. The figure is (VmHWM after - VmHWM before) / (N x body bytes): peak
resident bytes per body byte admitted.

The default ADMIT_BODY_BYTES follows from the largest factor:
    (MemoryHigh - resident size of the full profile with every plugin - margin) / factor
with MemoryHigh from systemd/optillm-proxy.service and the full profile's resident size passed as
--full-base-mib (measured by bench/profiles.sh; default 1100). Not a test: nothing fails on a
figure. Exit codes: 0 printed, 1 a step failed (a server did not start or died), 2 usage.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import request_path as rp  # noqa: E402

UNIT = rp.REPO / "systemd" / "optillm-proxy.service"
APPROACHES = ("none", *rp.FANOUT)
UPSTREAM_DELAY_SECONDS = 1.0
MARGIN_MIB = 128  # thread stacks, the upstream pool, allocator slack


def memory_high_bytes() -> int:
    match = re.search(r"^MemoryHigh=(\d+)M$", UNIT.read_text(), re.M)
    if not match:
        raise SystemExit(f"memory_per_byte.py: no MemoryHigh=<N>M in {UNIT}")
    return int(match.group(1)) * 2**20


def one(server: rp.Server, key: str, model: str, content: str) -> str:
    try:
        r = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": content}]},
                       timeout=300)
        return str(r.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def measure(approach: str, venv: Path, work: Path, upstream: rp.Server, key: str, count: int,
            body: int, started: list) -> dict:
    env = {"ADMIT_BODY_BYTES": str(2**30), "SERVER_THREADS": "64", "MAX_REQUEST_BYTES": str(body + 4096)}
    server = rp.start_variant("launcher", venv, work, upstream, key, approach, started, env)
    model = rp.MODEL if approach == "none" else f"{approach}-{rp.MODEL}"
    try:
        rp.wait_healthy(server)
        rp.set_delay(upstream, 0)
        warm = [one(server, key, model, "What is 6*7?") for _ in range(3)]
        before = rp.status_kib(server.pid, "VmHWM")
        rp.set_delay(upstream, UPSTREAM_DELAY_SECONDS)
        prompt = "x" * body
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            statuses = list(pool.map(lambda _: one(server, key, model, prompt), range(count)))
        server.check_alive()
        after = rp.status_kib(server.pid, "VmHWM")
    finally:
        server.stop()
        rp.set_delay(upstream, 0)
    grown = (after - before) * 1024
    return {"warm_up": warm, "statuses": statuses, "before_kib": before, "after_kib": after,
            "bytes_per_body_byte": grown / (count * body)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", required=True, type=Path)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--body-mb", type=float, default=3.9)
    parser.add_argument("--full-base-mib", type=int, default=1100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.concurrent < 1 or args.body_mb <= 0:
        parser.error("--concurrent and --body-mb want positive numbers")
    if not (args.venv / "bin" / "python").exists():
        parser.error(f"{args.venv / 'bin' / 'python'} does not exist: --venv must be a runtime venv")
    body = int(args.body_mb * 1_000_000)
    key = f"bench-proxy-{secrets.token_urlsafe(24)}"
    work = Path(tempfile.mkdtemp(prefix="bench-memory-per-byte."))
    started: list = []
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "venv": str(args.venv.resolve()),
                    "concurrent": args.concurrent, "body_bytes": body, "approaches": {}}
    try:
        upstream = rp.start_upstream(work, started)
        rp.wait_healthy(upstream, 30)
        for approach in APPROACHES:
            result["approaches"][approach] = measure(approach, args.venv.resolve(), work, upstream, key,
                                                     args.concurrent, body, started)
    except rp.StepFailed as exc:
        print(f"memory_per_byte.py: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    factor = max(a["bytes_per_body_byte"] for a in result["approaches"].values())
    room = memory_high_bytes() - (args.full_base_mib + MARGIN_MIB) * 2**20
    result["largest_factor"] = factor
    result["admit_body_bytes"] = int(room / factor) if factor > 0 else None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['date']}, {os.cpu_count()} CPUs, {args.concurrent} concurrent bodies of {body} bytes, "
          f"upstream {UPSTREAM_DELAY_SECONDS:g} s")
    print("| approach | answers | VmHWM before, MiB | after, MiB | resident bytes per body byte |")
    print("|---|---|---:|---:|---:|")
    for name, a in result["approaches"].items():
        answers = {s: a["statuses"].count(s) for s in sorted(set(a["statuses"]))}
        print(f"| {name} | {answers} | {a['before_kib'] / 1024:.0f} | {a['after_kib'] / 1024:.0f} | "
              f"{a['bytes_per_body_byte']:.1f} |")
    print(f"\nADMIT_BODY_BYTES <= (MemoryHigh {memory_high_bytes() >> 20} MiB - full profile {args.full_base_mib} MiB "
          f"- margin {MARGIN_MIB} MiB) / {factor:.1f} = {result['admit_body_bytes']} bytes "
          f"({(result['admit_body_bytes'] or 0) / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
