import pytest

pytestmark = pytest.mark.real


def test_full_runtime_serves_and_counts_moa(full_runtime, upstream, optillm_factory):
    import httpx

    p = optillm_factory(full_runtime, upstream.base_url)
    r = httpx.post(f"{p.url}/v1/chat/completions", headers={"Authorization": f"Bearer {p.key}"},
                   json={"model": "moa-jerry-xl", "messages": [{"role": "user", "content": "What is 6*7?"}],
                         "max_tokens": 50}, timeout=60)
    assert r.status_code == 200, r.text
    calls = upstream.calls()
    assert [c["model"] for c in calls] == ["jerry-xl"] * 3
    assert calls[0]["n"] == 3
