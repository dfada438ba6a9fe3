"""tests/cache.py's build_once: what every cached real part (runtimes, LiteLLM, the box bases, the
fleet layer and wheelhouse) relies on to be built once and never used half-built."""

from __future__ import annotations

import pytest

from tests.cache import COMPLETE, build_once


def writer(calls: list[str], fail: bool = False):
    def build(target):
        calls.append(target.name)
        target.mkdir()
        (target / "part").write_text("built\n")
        if fail:
            raise RuntimeError("the build broke")
    return build


def test_built_once_then_reused(tmp_path):
    calls, pruned = [], []
    path = tmp_path / "part-abc"
    first = build_once(path, writer(calls), lock=".lock", prune=lambda: pruned.append(1))
    again = build_once(path, writer(calls), lock=".lock", prune=lambda: pruned.append(1))
    assert first[0] == again[0] == path and again[1] == 0.0
    assert calls == ["part-abc.building"] and pruned == [1]
    assert (path / "part").read_text() == "built\n" and (path / COMPLETE).exists()
    assert not (tmp_path / "part-abc.building").exists()


def test_a_failed_build_leaves_nothing_and_the_next_call_builds_again(tmp_path):
    calls = []
    path = tmp_path / "part-abc"
    with pytest.raises(RuntimeError, match="the build broke"):
        build_once(path, writer(calls, fail=True), lock=".lock")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    build_once(path, writer(calls), lock=".lock")
    assert calls == ["part-abc.building", "part-abc.building"] and (path / COMPLETE).exists()


def test_in_place_builds_at_the_path_and_an_incomplete_one_is_rebuilt(tmp_path):
    calls = []
    path = tmp_path / "venv-abc"
    path.mkdir()
    (path / "leftover").write_text("from a build that died\n")  # no .complete: not trusted
    build_once(path, writer(calls), lock=".lock", in_place=True)
    assert calls == ["venv-abc"] and not (path / "leftover").exists() and (path / COMPLETE).exists()
