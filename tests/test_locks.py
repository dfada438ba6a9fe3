"""The runtime locks, one directory per host Python (locks/py<X.Y>/), derived by tools/derive_locks.py.

Offline (no index): every lock records the sha256 of its inputs, so a stale one is caught here
without resolving; the leans derived from a full lock are re-derived from the committed files.
The resolving `--check` (needs the package index, as CI has) is marked `real`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools import derive_lean_lock, derive_locks

LOCKS = derive_locks.LOCKS
MEASURED = derive_locks.MEASURED_PYTHON


def entries(path):
    return derive_lean_lock.parse_lock(path)


def existing_locks():
    return sorted(p for p in LOCKS.glob("py*/*.txt"))


def test_one_directory_per_supported_python_and_nothing_else():
    assert sorted(p.name for p in LOCKS.glob("py*") if p.is_dir()) == [f"py{v}" for v in derive_locks.PYTHONS]
    for python in derive_locks.PYTHONS:
        for profile in derive_locks.PROFILES:
            lock = derive_locks.lock_path(python, profile)
            reason = derive_locks.unavailable_path(python, profile)
            assert lock.exists() != reason.exists(), f"py{python}: {profile} needs a lock or a reason, not both"
            if reason.exists():
                assert reason.read_text() == derive_locks.UNAVAILABLE[(python, profile)] + "\n"
    assert derive_locks.lock_path("3.13", "lean").exists() and not derive_locks.lock_path("3.13", "full").exists()


@pytest.mark.parametrize("lock", existing_locks(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_lock_pins_optillm_with_hashes_for_its_python(lock):
    python = lock.parent.name.removeprefix("py")
    found = entries(lock)
    assert {e.name: e.version for e in found}["optillm"] == "0.3.12"
    assert all("--hash=sha256:" in e.text for e in found), "every entry is hashed (--require-hashes)"
    head = lock.read_text().split("\n", 20)[:20]
    assert f"# Target: CPython {python}" in head, "lint compares this with the runtime's Python"
    if lock.name == "lean.txt":
        assert not {e.name for e in found} & {"torch", "transformers", "spacy", "triton", "gradio"}


@pytest.mark.parametrize("lock", existing_locks(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_lock_is_stale_against_its_inputs(lock):
    """full.in, launcher/requirements.in, the measured lean set and the tool's settings all feed the
    recorded digest (the measured 3.11 lean records its full lock's sha256 instead)."""
    python, profile = lock.parent.name.removeprefix("py"), lock.stem
    text = lock.read_text()
    if (python, profile) == (MEASURED, "lean"):
        assert derive_lean_lock.sha256(derive_locks.lock_path(MEASURED, "full")) in text.split("\n", 8)[2]
        return
    assert derive_locks.recorded_digest(text) == derive_locks.inputs_digest(python, profile), \
        f"{lock.relative_to(LOCKS.parent)} is stale: regenerate with `uv run python tools/derive_locks.py`"


@pytest.mark.parametrize("python", [p for p in derive_locks.PYTHONS if p != MEASURED
                                    and derive_locks.lock_path(p, "full").exists()])
def test_a_lean_lock_with_a_full_lock_is_its_verbatim_closure(python):
    """Re-derived offline: the measured names, their entries verbatim from this Python's full lock,
    plus what those require there."""
    full = entries(derive_locks.lock_path(python, "full"))
    names = {e.name for e in entries(derive_locks.lock_path(MEASURED, "lean"))}
    members = derive_locks.lean_members(full, names)
    lean = entries(derive_locks.lock_path(python, "lean"))
    assert [e.text for e in lean] == [e.text for e in full if e.name in members]


def test_the_measured_lean_set_is_closed_in_its_full_lock():
    """The `# via` closure the other Pythons use gives back the measured set on 3.11 itself."""
    full = entries(derive_locks.lock_path(MEASURED, "full"))
    names = {e.name for e in entries(derive_locks.lock_path(MEASURED, "lean"))}
    assert derive_locks.lean_members(full, names) == names


def test_a_lean_lock_without_a_full_lock_holds_the_measured_set():
    for python in derive_locks.PYTHONS:
        if derive_locks.lock_path(python, "full").exists():
            continue
        lean_text = derive_locks.lock_path(python, "lean").read_text()
        names = {e.name for e in entries(derive_locks.lock_path(MEASURED, "lean"))}
        got = {e.name for e in derive_lean_lock.parse_lock_text(lean_text)}
        missing = names - got
        assert not missing or f"required by nothing here (imported there only if present): " \
                               f"{', '.join(sorted(missing))}" in lean_text, missing


def test_via_notes_name_the_requiring_packages():
    (entry,) = derive_lean_lock.parse_lock_text(
        "numpy==1.26.4 \\\n    --hash=sha256:00\n    # via\n    #   -r locks/full.in\n    #   blis\n    #   optillm\n")
    assert derive_locks.via_parents(entry) == {"blis", "optillm"}
    (entry,) = derive_lean_lock.parse_lock_text("mdurl==0.1.2 \\\n    --hash=sha256:00\n    # via markdown-it-py\n")
    assert derive_locks.via_parents(entry) == {"markdown-it-py"}


def test_the_plugin_table_knows_the_profiles_of_each_python():
    """The launcher and lint read this section; it must say what locks/ holds."""
    table = json.loads(derive_locks.PLUGIN_TABLE.read_text())
    assert table["pythons"] == derive_locks.pythons_table(derive_locks.existing_files())
    assert table["pythons"]["3.13"]["profiles"] == ["lean"]
    assert "spacy" in table["pythons"]["3.13"]["full_unavailable"]


@pytest.mark.real
def test_check_resolves_every_lock_again_and_finds_none_stale():
    """The documented staleness check, for real: uv resolves each Python against the index (the
    3.11 measurement has its own test in tests/test_lean_profile.py)."""
    proc = subprocess.run([sys.executable, str(derive_locks.THIS), "--check", "--no-measure"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "locks up to date" in proc.stdout
