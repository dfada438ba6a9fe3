"""The lean runtime profile: derived from the full lock by measurement, and enough for every core approach.

Real parts: venvs built from locks/py<X.Y>/lean.txt for every supported Python and from
locks/py3.11/full.txt (build_runtime), a real optillm
0.3.12 started from the lean venv through our launcher with PROXY_PLUGINS=none, and the
recording upstream.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.fixtures.runtime import REPO, build_runtime, launcher_credentials, start_optillm
from tools import derive_lean_lock, derive_locks, measure_plugins

LOCKS = REPO / "locks" / f"py{derive_locks.MEASURED_PYTHON}"


@pytest.fixture(scope="module", params=derive_locks.PYTHONS)
def lean_runtime(request):
    """The lean runtime of each host Python with locks (3.12 and 3.13 from pyenv's interpreters):
    every test below that serves or imports runs on each."""
    return build_runtime("lean", request.param)

# Upstream chat-completion calls per core approach for one "What is 2+2?" (max_tokens 50)
# against the recording upstream, measured with tools/lean_probe.py in the full venv and
# through the launcher in the lean venv (identical).
CORE_APPROACH_CALLS = {
    "none": 1, "mcts": 14, "bon": 4, "moa": 3, "rto": 3, "z3": 2, "self_consistency": 5,
    "pvg": 17, "rstar": 25, "cot_reflection": 1, "plansearch": 4, "leap": 2, "re2": 1,
    "cepo": 48, "mars": 15,
}
PLUGIN_ONLY_MODULES = ("torch", "transformers", "spacy")
PROXY_KEY = "lean-test-proxy-key-0123456789abcdef012345"


def run_in(venv, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"})


# --- the lock files (no venv needed) ------------------------------------------------------------


def test_lean_lock_is_a_verbatim_subset_of_the_full_lock():
    full = {e.name: e for e in derive_lean_lock.parse_lock(LOCKS / "full.txt")}
    lean = derive_lean_lock.parse_lock(LOCKS / "lean.txt")
    assert lean, "locks/py3.11/lean.txt has no entries"
    for entry in lean:
        assert entry.name in full, f"{entry.name} is in the lean lock but not in the full lock"
        assert entry.text == full[entry.name].text, f"{entry.name}: pin, hashes or notes differ from the full lock"
        assert "--hash=sha256:" in entry.text
    names = [e.name for e in lean]
    assert names == [n for n in full if n in set(names)], "lean entries are not in the full lock's order"
    assert {e.name: e.version for e in lean}["optillm"] == "0.3.12"
    assert full["optillm"].version == "0.3.12"
    assert not set(names) & {"torch", "transformers", "spacy", "triton", "gradio"}


def test_lean_lock_names_the_full_lock_it_was_derived_from():
    head = (LOCKS / "lean.txt").read_text().split("\n", 8)[:8]
    assert any(derive_lean_lock.sha256(LOCKS / "full.txt") in line for line in head), \
        "locks/py3.11/lean.txt is stale: regenerate with `uv run python tools/derive_locks.py`"


class _Dist:
    def __init__(self, *requires: str) -> None:
        self.requires = list(requires)


def test_closure_follows_markers_and_extras_but_not_optillms_own_list():
    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "implementation_version": "3.11.2", "platform_release": "", "platform_version": ""}
    dists = {
        "optillm": _Dist("torch", "spacy<3.8.0"),
        "httpx": _Dist("anyio", "h2<5,>=3; extra == 'http2'", "pywin32; sys_platform == 'win32'",
                       "Uvicorn[Standard]; python_version >= '3.8'"),
        "anyio": _Dist("idna>=2.8", "exceptiongroup>=1.0.2; python_version < '3.11'"),
        "idna": _Dist(), "uvicorn": _Dist("click", "uvloop; extra == 'standard'"),
        "click": _Dist(), "uvloop": _Dist(), "torch": _Dist(), "spacy": _Dist(), "h2": _Dist(),
    }
    why = derive_lean_lock.requirement_closure(["optillm", "httpx"], dists, env)
    assert set(why) == {"optillm", "httpx", "anyio", "idna", "uvicorn", "click", "uvloop"}
    assert why["uvloop"] == "required by uvicorn" and why["httpx"] == "imported"


def test_check_reports_a_stale_lean_lock(tmp_path, monkeypatch, capsys):
    derived = (LOCKS / "lean.txt").read_text()
    monkeypatch.setattr(derive_lean_lock, "derive", lambda venv: (derived, {}, {}))
    assert derive_lean_lock.main(["--check"]) == 0
    stale = tmp_path / "lean.txt"
    stale.write_text(derived.replace("optillm==0.3.12", "optillm==0.3.11"))
    assert derive_lean_lock.main(["--check", "--lean-lock", str(stale)]) == derive_lean_lock.EXIT_STALE
    assert "is stale" in capsys.readouterr().err


@pytest.mark.real
def test_derivation_refuses_a_venv_that_is_not_the_full_lock(lean_runtime, capsys):
    code = derive_lean_lock.main(["--check", "--full-venv", str(lean_runtime)])
    assert code == derive_lean_lock.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "was not built from" in err and "Traceback" not in err


# --- the real derivation and the real lean venv --------------------------------------------------


@pytest.mark.real
def test_derivation_check_passes_against_the_full_venv(full_runtime):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "derive_lean_lock.py"), "--check",
                           "--full-venv", str(full_runtime)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "up to date" in proc.stdout


@pytest.mark.real
def test_lean_venv_imports_the_core_but_no_plugin_stack(lean_runtime):
    core = run_in(lean_runtime, "import optillm, optillm.server; print(optillm.__version__, "
                                "sorted(optillm.server.known_approaches))")
    assert core.returncode == 0, core.stderr[-3000:]
    version, approaches = core.stdout.split(" ", 1)
    assert version == "0.3.12"
    assert approaches.strip() == str(sorted(CORE_APPROACH_CALLS))
    for module in PLUGIN_ONLY_MODULES:
        proc = run_in(lean_runtime, f"import {module}")
        assert proc.returncode != 0 and f"No module named '{module}'" in proc.stderr, module


@pytest.mark.real
def test_only_optillms_own_plugin_requirements_are_missing(lean_runtime):
    """uv installed exactly the lock (sync, no resolution); every package but optillm is complete."""
    proc = subprocess.run(["uv", "pip", "check", "--python", str(lean_runtime / "bin" / "python")],
                          capture_output=True, text=True)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith("The package")]
    assert problems, "expected optillm's omitted plugin requirements to be reported"
    assert all(line.startswith("The package `optillm` requires") for line in problems), problems
    missing = {line.split("`")[3].split("<")[0].split("[")[0] for line in problems}
    assert {"torch", "transformers", "spacy"} <= missing


@pytest.fixture(scope="module")
def lean_server(lean_runtime, upstream_session, tmp_path_factory):
    """Real optillm from the lean venv, started as the unit starts it: our launcher, no plugins."""
    tmp = tmp_path_factory.mktemp("lean-server")
    credentials = launcher_credentials(tmp / "credentials", PROXY_KEY)
    argv = [str(lean_runtime / "bin" / "python"), "-I", str(REPO / "launcher" / "optillm-proxy-launcher.py"),
            "--host", "127.0.0.1", "--port", "{port}", "--base-url", upstream_session.base_url,
            "--model", "jerry-xl"]
    server = start_optillm(lean_runtime, tmp, upstream_session.base_url, argv=argv, key=PROXY_KEY,
                           env_extra={"CREDENTIALS_DIRECTORY": str(credentials), "PROXY_PLUGINS": "none",
                                      # Every core approach, to prove each one answers (the default
                                      # allow-list is the four the gateway routes).
                                      "PROXY_APPROACHES": ",".join(sorted(set(CORE_APPROACH_CALLS) - {"none"}))})
    yield server
    server.stop()


@pytest.mark.real
@pytest.mark.parametrize("approach", sorted(CORE_APPROACH_CALLS))
def test_core_approach_answers_from_the_lean_runtime(lean_server, upstream, approach):
    r = httpx.post(f"{lean_server.url}/v1/chat/completions",
                   headers={"Authorization": f"Bearer {lean_server.key}"},
                   json={"model": f"{approach}-jerry-xl", "max_tokens": 50,
                         "messages": [{"role": "user", "content": "What is 2+2?"}]}, timeout=300)
    assert r.status_code == 200, r.text[:2000]
    assert r.json()["choices"][0]["message"]["content"]
    calls = upstream.calls()
    assert len(calls) == CORE_APPROACH_CALLS[approach]
    assert {c["model"] for c in calls} == {"jerry-xl"}


@pytest.mark.real
def test_lean_server_loaded_no_plugin(lean_server):
    log = lean_server.log_text()
    assert "Starting server" in log, log[-3000:]
    assert "Loaded package plugin" not in log and "Error loading" not in log


# --- which plugins the lean profile can import ---------------------------------------------------


@pytest.mark.real
def test_plugin_table_matches_what_the_lean_venv_imports(lean_runtime):
    table = measure_plugins.load_table()["plugins"]
    assert len(table) == 16
    measured = measure_plugins.measure({"lean": lean_runtime}, sorted(e["module"] for e in table.values()))
    claimed = {slug: "lean" in e["profiles"] for slug, e in table.items()}
    actual = {slug: measured[e["module"]]["lean"] is None for slug, e in table.items()}
    assert claimed == actual, {s: measured[table[s]["module"]]["lean"] for s in table if claimed[s] != actual[s]}
    # The measurement itself can tell the two apart: the lean venv imports some, and not others.
    assert any(actual.values()) and not all(actual.values())
