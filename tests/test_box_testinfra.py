"""CI runs the operator's testinfra suite (tests/testinfra/) against the booted box.

How: inside the box, after the real install.sh, with the RUNBOOK's own command
`tests/testinfra/run.sh --hosts=local://`, as root. The repo is bound read-only at /repo and the
box's PATH has no uv: run.sh builds the suite's venv (uv.lock's dev group: pytest,
pytest-testinfra, PyYAML...) with the uv that install.sh put in /opt/optillm-proxy/tools, from the
host's uv cache bound at /var/cache/uv (no download), outside the checkout. Nothing is written into
/repo (no bytecode, no pytest cache). This is the same command an operator runs on their host.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.box.machine import BOX_REPO, INSTALL_ENV
from tests.fixtures.box import record

pytestmark = pytest.mark.box

# The command the RUNBOOK prints (section 2), run from the checkout; tests/test_docs.py checks it is there.
RUNBOOK_COMMAND = "tests/testinfra/run.sh --hosts=local://"
# Checks in tests/testinfra/test_deployed_host.py (the parametrized one counts twice).
MIN_CHECKS = 12


def test_deployed_host_suite_passes_in_box(box):
    assert not box.run("command -v uv").ok, "the box has uv on PATH: the check below would not prove run.sh needs none"
    started = time.monotonic()
    result = box.run(f"cd {BOX_REPO} && {RUNBOOK_COMMAND} -q -rA", env=INSTALL_ENV, timeout=900)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-6000:]
    record("testinfra suite in the box, venv build included s", round(time.monotonic() - started, 1))
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= MIN_CHECKS, output[-3000:]
    assert not re.search(r"\d+ (failed|skipped|error)", output), output[-3000:]
    record("testinfra suite in the box", passed.group(0))
