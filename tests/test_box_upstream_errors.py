"""The new-operator trial in the booted box: `opsctl smoke --all` while the model behind LiteLLM
answers 401 quoting the key it was given (as LiteLLM's own 401 does). The hardened unit's journal,
records included (native fields through cysystemd), and what smoke prints hold no key; each
request's upstream calls stop at the first refusal.
"""

from __future__ import annotations

import time

import pytest

from ops.from_launcher.layout import BASE_MODEL, SERVICE
from ops.from_launcher.layout import DEFAULT as LAYOUT
from tests.fixtures.litellm import DEFAULT_UPSTREAM_KEY


pytestmark = pytest.mark.box


def wait_until_litellm_serves_the_model_again(box, seconds: float = 60.0) -> None:
    """LiteLLM's router cools the deployment down after a 401: the next box tests need it back."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if box.run(f"opsctl smoke {BASE_MODEL}", timeout=120).ok:
            return
        time.sleep(1)
    raise AssertionError(f"LiteLLM did not serve {BASE_MODEL} again within {seconds:g} s")


def test_smoke_all_against_a_model_quoting_the_key_leaves_no_key_in_the_journal(box, box_upstream):
    proxy_key = (box.root / str(LAYOUT.key_file).lstrip("/")).read_text().strip()
    keys = {"proxy key": proxy_key, "upstream key": box.upstream_key, "LiteLLM's key for the model": DEFAULT_UPSTREAM_KEY}
    time.sleep(1.1)  # journalctl --since has second resolution
    since = box.check("date +%s").strip()
    box_upstream.reset()
    box_upstream.recording.fail_with(401, quote_authorization=True)
    try:
        smoke = box.run("opsctl smoke --all", timeout=900)
        calls = box_upstream.calls()
    finally:
        box_upstream.reset()
        wait_until_litellm_serves_the_model_again(box)
    assert not smoke.ok and "upstream error via proxy" in smoke.stdout, smoke.stdout + smoke.stderr
    time.sleep(1)  # the journal is asynchronous
    journal = box.run(f"journalctl -u {SERVICE} --since @{since} --no-pager -o verbose").stdout
    for name, key in keys.items():
        assert key not in journal, f"the {name} is in the journal"
        assert key not in smoke.stdout + smoke.stderr, f"smoke printed the {name}"
    # The model's words reached the journal, redacted; the records are there.
    assert "Received API Key = Bearer [redacted]" in journal, journal[-3000:]
    assert "OPTILLM_PROXY_UPSTREAM_SKIPPED=" in journal
    # No strategy request repeated the refused call (LiteLLM cools the model down after the first
    # 401 and answers 429 itself, which the proxy may retry once: those never reach the model).
    assert len(calls) <= 5, calls
    print(f"\nmodel calls during smoke --all: {len(calls)}")
