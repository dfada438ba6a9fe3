"""layout.env is the one place the deployed layout, ports and routed approaches are written.

install.sh sources it and Python reads it (optillm_proxy_launcher/layout.py), so the two cannot
disagree; what these tests hold instead: both read it the same way, the reader refuses what bash
would read differently, no other script or module spells a path or port by hand, and the systemd
units (which cannot read it) say the same.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from optillm_proxy_launcher import layout
from optillm_proxy_launcher.layout import FACTS, LayoutError, read

REPO = Path(__file__).resolve().parents[1]
PYTHON_TREES = ("ops", "launcher", "bench")
SHELL_SCRIPTS = ("install.sh", "bench/*.sh", "scripts/*.sh")
# The facts a hand copy would spell: every root of the layout, the manifest name, both endpoints.
NEEDLES = (FACTS["PREFIX_DIR"], FACTS["CONF_DIR"], FACTS["STATE_DIR"], FACTS["OPSCTL_LINK"],
           f"/etc/systemd/system/{FACTS['SERVICE']}", "sysusers.d/", "tmpfiles.d/", FACTS["MANIFEST_REL"],
           f"{FACTS['LISTEN_HOST']}:{FACTS['LISTEN_PORT']}", f"{FACTS['UPSTREAM_HOST']}:{FACTS['UPSTREAM_PORT']}")
PORTS = {layout.LISTEN_PORT, layout.UPSTREAM_PORT}
# A needle counts where a path or address starts, not inside a longer one (the repo's own
# etc/optillm-proxy/env.example is not the deployed /etc/optillm-proxy).
SPELLED = re.compile(r"(?<![\w}.-])(" + "|".join(map(re.escape, NEEDLES)) + ")")


def bash_reading(path: Path) -> dict[str, str]:
    keys = " ".join(FACTS)
    script = f'set -eu; source {shlex.quote(str(path))}; for k in {keys}; do printf "%s=%s\\0" "$k" "${{!k}}"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_bash_and_the_python_reader_read_layout_env_alike():
    assert bash_reading(layout.SOURCE) == FACTS
    assert FACTS["UPSTREAM_URL"] == f"http://{FACTS['UPSTREAM_HOST']}:{FACTS['UPSTREAM_PORT']}/v1"
    assert layout.PROFILES == ("lean", "full") and layout.DEFAULT_PROFILE in layout.PROFILES


@pytest.mark.parametrize("line, why", [
    ("A=$(date)", "not KEY=value"),
    ("A='single'", "not KEY=value"),
    ("A=two words", "not KEY=value"),
    ("export A=1", "not KEY=value"),
    ("A=${UNDEFINED}/x", "${UNDEFINED} is not defined above"),
    ("SERVICE=again", "SERVICE is set twice"),
    ('A="${SERVICE}\\n"', "not KEY=value"),
])
def test_the_reader_refuses_what_bash_could_read_differently(tmp_path, line, why):
    path = tmp_path / "layout.env"
    path.write_text("SERVICE=optillm-proxy\n" + line + "\n")
    with pytest.raises(LayoutError, match=re.escape(why)) as refused:
        read(path)
    assert f"{path}:2:" in str(refused.value)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def python_hand_copies(source: str, name: str) -> list[str]:
    """String constants (f-string parts included) and integers that spell a fact; docstrings are
    prose and examples, not values the code uses."""
    tree = ast.parse(source, name)
    prose = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in prose:
            continue
        value = node.value
        if (isinstance(value, str) and SPELLED.search(value)) or (type(value) is int and value in PORTS):
            hits.append(f"{name}:{node.lineno}: {value!r}")
    return hits


def shell_hand_copies(source: str, name: str) -> list[str]:
    hits = []
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.strip()
        if code.startswith("#"):
            continue
        if SPELLED.search(code) or re.search(rf"\b({'|'.join(map(str, PORTS))})\b", code):
            hits.append(f"{name}:{number}: {code}")
    return hits


def test_the_scanners_find_a_hand_copy():
    assert python_hand_copies(f'URL = "http://{FACTS["LISTEN_HOST"]}:{FACTS["LISTEN_PORT"]}"\nPORT = {layout.UPSTREAM_PORT}\n', "x.py") == [
        f"x.py:1: 'http://{FACTS['LISTEN_HOST']}:{FACTS['LISTEN_PORT']}'", f"x.py:2: {layout.UPSTREAM_PORT}"]
    assert python_hand_copies(f'def f():\n    """Reads {FACTS["ENV_FILE"]}."""\n    return f"{{x}} {FACTS["KEY_FILE"]}"\n', "y.py") == [
        f"y.py:3: ' {FACTS['KEY_FILE']}'"]
    assert shell_hand_copies(f'# {FACTS["ENV_FILE"]}\nENV="{FACTS["ENV_FILE"]}"\nfake_upstream {layout.UPSTREAM_PORT}\n'
                             f'cp "${{REPO}}{FACTS["ENV_FILE"]}.example" .\n', "z.sh") == [
        f'z.sh:2: ENV="{FACTS["ENV_FILE"]}"', f"z.sh:3: fake_upstream {layout.UPSTREAM_PORT}"]


def test_no_script_or_module_spells_a_path_or_port_by_hand():
    hits = []
    for tree in PYTHON_TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            hits += python_hand_copies(path.read_text(), str(path.relative_to(REPO)))
    for pattern in SHELL_SCRIPTS:
        for path in sorted(REPO.glob(pattern)):
            hits += shell_hand_copies(path.read_text(), str(path.relative_to(REPO)))
    assert hits == [], "read these from layout.env (install.sh and bench: source it; Python: optillm_proxy_launcher.layout)"


def _directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_units_say_what_layout_env_says():
    """systemd cannot read layout.env: the units spell the same values, held to it here."""
    service = _directives(REPO / "systemd" / f"{layout.SERVICE}.service")
    socket = _directives(REPO / "systemd" / layout.SOCKET_UNIT)
    current = FACTS["CURRENT_LINK"]
    assert service["ExecStart"] == [
        f"{current}/bin/python -I {current}/{layout.LAUNCHER_REL} --host {layout.LISTEN_HOST} "
        f"--port {layout.LISTEN_PORT} --base-url {layout.UPSTREAM_URL} --model {layout.BASE_MODEL}"]
    assert service["WorkingDirectory"] == [FACTS["PREFIX_DIR"]]
    assert service["EnvironmentFile"] == [layout.ENV_FILE]
    assert service["LoadCredential"] == [f"api-key:{layout.KEY_FILE}", f"upstream-key:{layout.UPSTREAM_KEY_FILE}"]
    assert service["User"] == service["Group"] == [layout.SERVICE_USER]
    assert service["Requires"] == [layout.SOCKET_UNIT]
    assert service["StateDirectory"][0].split()[0] == Path(FACTS["STATE_DIR"]).name
    assert FACTS["STATE_DIR"] == f"/var/lib/{Path(FACTS['STATE_DIR']).name}"  # StateDirectory= is under /var/lib
    assert [b.split(":")[1] for b in service["BindPaths"]][1] == str(Path(layout.PROVIDER_FILE).parent / "logs")
    assert socket["ListenStream"] == [f"{layout.LISTEN_HOST}:{layout.LISTEN_PORT}"]


def test_the_optillm_version_is_written_once():
    """layout.env's OPTILLM_VERSION is what the patch points are verified against and what every
    lock pins; locks/full.in (uv's input, which cannot read layout.env) must spell the same."""
    from optillm_proxy_launcher import patches

    assert patches.OPTILLM_VERSION == layout.OPTILLM_VERSION
    assert layout.OPTILLM_VERSION in patches.FINGERPRINTS
    pins = re.findall(r"^optillm==(\S+)", (REPO / "locks" / "full.in").read_text(), re.M)
    assert pins == [layout.OPTILLM_VERSION]
    for lock in sorted((REPO / "locks").glob("py*/*.txt")):
        assert re.findall(r"^optillm==(\S+)", lock.read_text(), re.M) == [layout.OPTILLM_VERSION], lock
    # Python code reads it from layout.env: no string a program uses spells the pinned version
    # (docstrings state measured facts about it, which stay true of that release).
    spelled = []
    for tree in (*PYTHON_TREES, "tools"):
        for path in sorted((REPO / tree).rglob("*.py")):
            module = ast.parse(path.read_text())
            docstrings = {id(node.value) for node in ast.walk(module) if isinstance(node, ast.Expr)}
            for node in ast.walk(module):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                        and re.search(rf"(optillm |==){re.escape(layout.OPTILLM_VERSION)}\b", node.value):
                    spelled.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert spelled == [], spelled
