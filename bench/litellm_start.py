"""The chain's LiteLLM (locks/litellm.txt): lock size, venv size, start-to-ready time, memory.

Usage: uv run python bench/litellm_start.py [-n RUNS]
Builds the venv into the test cache dir if needed (as the chain tests do), then starts LiteLLM
RUNS times with the shipped config on a free port, each until /v1/models lists the chain's
models. Not a test: quote its output in bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.litellm import LOCK, build_litellm, start_litellm
from tests.fixtures.runtime import free_port


def lock_packages() -> int:
    return sum(1 for line in LOCK.read_text().splitlines() if line[:1].isalnum())


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def rss_mib(pid: int) -> float:
    """Resident memory of the process group LiteLLM runs as (uvicorn may fork a worker)."""
    out = subprocess.run(["ps", "-o", "rss=", "-g", str(pid)], capture_output=True, text=True, check=False).stdout
    return sum(int(x) for x in out.split()) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=3)
    runs = parser.parse_args().runs
    if runs < 1:
        parser.error("-n wants a positive integer")
    start = time.monotonic()
    venv = build_litellm()
    build = time.monotonic() - start
    litellm_version = subprocess.run([str(venv / "bin" / "python"), "-c",
                                      "import importlib.metadata as m; print(m.version('litellm'))"],
                                     capture_output=True, text=True, check=True).stdout.strip()
    print(f"litellm {litellm_version}: {lock_packages()} packages in {LOCK.name}")
    print(f"venv {venv}: {du_mib(venv):.0f} MiB on disk (build or reuse: {build:.1f} s)")
    ready, rss = [], []
    for _ in range(runs):
        # Nothing listens at these addresses: readiness needs the config loaded, not the backends.
        handle = start_litellm(free_port(), "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", venv=venv)
        try:
            ready.append(handle.ready_seconds[0])
            rss.append(rss_mib(handle.proc.pid))
        finally:
            handle.close()
    print(f"start to ready over {runs} runs: min {min(ready):.1f} s, median {statistics.median(ready):.1f} s, "
          f"max {max(ready):.1f} s")
    print(f"resident memory when ready: median {statistics.median(rss):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
