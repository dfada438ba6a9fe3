"""The patch-point verification (patches.compare over internals.read) as a guard: whatever changes
in a dependency, every point relying on it is reported, and no other. On a synthetic optillm tree
holding each dependency (the real 0.3.12 source is tested in test_audit_optillm.py, real tier),
fingerprinted under a test version of the table."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optillm_proxy_launcher import internals, patches

SERVER_DEPS = sorted(d.partition(":")[2] for d in patches.dependencies() if d.startswith("server.py:"))


def write_tree(root: Path, edits: dict[str, str] | None = None) -> Path:
    """server.py with a function (or assignment) per server.py dependency, the names the points
    replace, a plugin, openai's Completions.create and werkzeug's metadata; `edits` appends a line
    to a dependency's body."""
    edits = edits or {}
    parts = ["from flask import Flask", "from openai import OpenAI", "app = Flask(__name__)"]
    for name in SERVER_DEPS:
        extra = edits.get(name, "")
        if name == "known_approaches":
            parts.append(f"known_approaches = ['none', 'moa']{extra}")
        else:
            parts.append(f"def {name}(x=1):\n    return x{extra}\n")
    (root / "optillm" / "plugins").mkdir(parents=True)
    (root / "optillm" / "server.py").write_text("\n".join(parts) + "\n")
    (root / "optillm" / "plugins" / "moa_plugin.py").write_text(f"SLUG = {edits.get('SLUG', 'moa')!r}\ndef run(): pass\n")
    completions = root / internals.OPENAI_COMPLETIONS[0]
    completions.parent.mkdir(parents=True)
    params = edits.get("Completions.create", "model, messages")
    completions.write_text(f"class Completions:\n    def create(self, *, {params}):\n        pass\n")
    info = root / f"werkzeug-{edits.get('werkzeug', '3.1.4')}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: werkzeug\nVersion: {edits.get('werkzeug', '3.1.4')}\n")
    (root / "werkzeug").mkdir()
    return root


@pytest.fixture(scope="module")
def test_version():
    with tempfile.TemporaryDirectory() as tmp:
        table = internals.read(write_tree(Path(tmp)), patches.dependencies())
    assert None not in table.values() and internals.ABSENT not in table.values()
    patches.FINGERPRINTS["test"] = table
    yield "test"
    del patches.FINGERPRINTS["test"]


def compare(edits, version):
    tmp = Path(tempfile.mkdtemp())
    try:
        return {v.point: v for v in patches.compare(write_tree(tmp, edits), version)}
    finally:
        shutil.rmtree(tmp)


def test_an_untouched_tree_is_unchanged_everywhere(test_version):
    assert {v.status for v in compare({}, test_version).values()} == {patches.UNCHANGED}


EDITS = st.one_of(
    # Code, not comments: a comment after a function's last statement is outside its source text.
    st.tuples(st.sampled_from(SERVER_DEPS), st.sampled_from([" + 0", " or None", " if x else 0"])),
    st.tuples(st.just("SLUG"), st.sampled_from(["moa2", "MOA", "moa-"])),
    st.tuples(st.just("Completions.create"), st.sampled_from(["model, messages, seed", "model", "model, message"])),
    st.tuples(st.just("werkzeug"), st.sampled_from(["3.1.5", "4.0.0"])),
)
KIND = {"SLUG": "plugins:SLUG", "Completions.create": "openai:Completions.create", "werkzeug": "dist:werkzeug"}


@settings(max_examples=30, deadline=None)
@given(edits=st.lists(EDITS, min_size=1, max_size=3, unique_by=lambda e: e[0]))
def test_every_point_relying_on_a_changed_dependency_is_reported_and_no_other(test_version, edits):
    changed = {KIND.get(name, f"server.py:{name}") for name, _ in edits}
    verdicts = compare(dict(edits), test_version)
    for point, (_, deps) in patches.POINTS.items():
        verdict = verdicts[point]
        assert set(verdict.differing) == changed & set(deps), (point, edits)
        assert verdict.status == (patches.CHANGED if verdict.differing else patches.UNCHANGED), (point, edits)


def test_a_replaced_name_that_is_gone_makes_its_point_gone(test_version, tmp_path):
    tree = write_tree(tmp_path)
    server = tree / "optillm" / "server.py"
    server.write_text(server.read_text().replace("from openai import OpenAI\n", ""))
    verdicts = {v.point: v.status for v in patches.compare(tree, test_version)}
    assert verdicts["server.OpenAI"] == patches.GONE
    assert [p for p, s in verdicts.items() if s != patches.UNCHANGED] == ["server.OpenAI"]


def test_a_runtime_must_hold_openai_and_werkzeug_an_unpacked_wheel_need_not(test_version, tmp_path):
    tree = write_tree(tmp_path)
    shutil.rmtree(tree / "openai")
    strict = {v.point: v for v in patches.compare(tree, test_version)}
    assert strict["server.app.wsgi_app"].differing == ("openai:Completions.create",)
    loose = {v.point: v for v in patches.compare(tree, test_version, strict=False)}
    assert loose["server.app.wsgi_app"].status == patches.UNCHANGED
    assert loose["server.app.wsgi_app"].unchecked == ("openai:Completions.create",)
