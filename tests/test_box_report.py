"""`opsctl report` against the real journal in the booted box: the launcher's records, written as
native journald fields through cysystemd under the hardened unit, read back by journalctl.

After `opsctl smoke --all` (behind the real LiteLLM, upstream = the recording model server), the
report's calls per request are 1/3/4/4/5 and its tokens per request equal what the model server
itself counted for those calls (prompt 10 per call, completion 7 per choice: tools/fake_upstream.py;
LiteLLM passes usage through unchanged, tests/test_box_metrics.py).
"""

from __future__ import annotations

import json
import time

import pytest

from ops.from_launcher.layout import BASE_MODEL, SERVICE, STRATEGY_PREFIXES
from tools.fake_upstream import TOKENS_PER_CHOICE

pytestmark = pytest.mark.box

PROMPT_TOKENS = 10
FAN_OUT = {"none": 1, "moa": 3, "bon": 4, "plansearch": 4, "self_consistency": 5}


def test_report_reads_the_journal_records_of_smoke_all(box, box_upstream):
    time.sleep(1.1)  # journalctl --since has second resolution: nothing earlier may fall inside
    since = box.check("date +%s").strip()
    box_upstream.reset()
    smoke = box.run("opsctl smoke --all", timeout=900)
    assert smoke.ok, smoke.stdout + smoke.stderr
    calls = box_upstream.calls()
    upstream_tokens = sum(PROMPT_TOKENS + TOKENS_PER_CHOICE * int(c["n"] or 1) for c in calls)
    # The journal is asynchronous: wait (bounded) until all five records are readable.
    deadline, report = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        result = box.run(f"opsctl report --since @{since} --json")
        assert result.rc == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        if sum(row["requests"] for row in report["approaches"]) >= len(FAN_OUT):
            break
        time.sleep(0.5)
    rows = {row["approach"]: row for row in report["approaches"]}
    assert set(rows) == set(FAN_OUT), report
    for approach, want in FAN_OUT.items():
        assert rows[approach]["requests"] == 1 and rows[approach]["error_pct"] == 0, rows[approach]
        assert rows[approach]["upstream_calls_per_request"] == want, rows[approach]
    assert sum(row["upstream_tokens_per_request"] for row in rows.values()) == upstream_tokens, (rows, calls)
    assert rows["none"]["tokens_vs_base"] == 1.0
    # And the records are native fields, queryable as documented.
    fields = box.run(f"journalctl -u {SERVICE} OPTILLM_PROXY_APPROACH=moa --since @{since} -o json --no-pager")
    record = json.loads(fields.stdout.strip().splitlines()[-1])
    assert record["OPTILLM_PROXY_UPSTREAM_CALLS"] == "3" and record["OPTILLM_PROXY_MODEL"] == f"moa-{BASE_MODEL}"
    assert "OPTILLM_PROXY_STATUS" in record and record["OPTILLM_PROXY_STATUS"] == "200"
    assert set(STRATEGY_PREFIXES) <= set(rows)
