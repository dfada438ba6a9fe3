"""CI runs the operator's testinfra suite (tests/testinfra/) against the booted box.

How: inside the box, after the real install.sh, with `--hosts=local://`. The repo is bound
read-only at /repo; the suite's venv (uv.lock's dev group: pytest, pytest-testinfra, PyYAML...) is
built in the box by the uv that install.sh put in /opt/optillm-proxy/tools, from the host's uv
cache bound at /var/cache/uv (no download). Nothing is written into /repo (no bytecode, no
pytest cache). This is the same command an operator runs on their host as root.
"""

from __future__ import annotations

import re
import time

import pytest

from ops.layout import DEFAULT as LAYOUT
from tests.box.machine import BOX_REPO, INSTALL_ENV
from tests.fixtures.box import record

pytestmark = pytest.mark.box

SUITE_VENV = "/root/testinfra-venv"
# Checks in tests/testinfra/test_deployed_host.py (the parametrized one counts twice).
MIN_CHECKS = 12


def test_deployed_host_suite_passes_in_box(box):
    uv = f"{LAYOUT.tools}/uv/bin/uv"
    env = dict(INSTALL_ENV, UV_PROJECT_ENVIRONMENT=SUITE_VENV, PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    sync = box.run(f"cd {BOX_REPO} && {uv} sync --frozen --group dev --no-install-project -q",
                   env=env, timeout=600)
    assert sync.ok, f"building the suite's venv in the box failed:\n{sync.stderr[-3000:]}"
    record("testinfra suite venv built in the box s", round(time.monotonic() - started, 1))
    result = box.run(f"cd {BOX_REPO} && PYTHONPATH={BOX_REPO} {SUITE_VENV}/bin/python -m pytest "
                     "-p no:cacheprovider tests/testinfra --hosts=local:// -q -rA",
                     env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= MIN_CHECKS, output[-3000:]
    assert not re.search(r"\d+ (failed|skipped|error)", output), output[-3000:]
    record("testinfra suite in the box", passed.group(0))
