"""The test cache directory the box keeps its bootstrapped base rootfs and session copies in."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    # Same rule as tests/fixtures/runtime.py: one documented cache for every real part.
    env = os.environ.get("OPTILLM_PROXY_TEST_CACHE")
    path = Path(env) if env else Path("/var/cache/optillm-proxy-ops")
    path.mkdir(parents=True, exist_ok=True)
    return path
