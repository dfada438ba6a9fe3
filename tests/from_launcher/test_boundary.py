"""ops.from_launcher is what ops takes from the launcher: the one place ops imports it from, and
stdlib only (opsctl's venv has none of the service's dependencies)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import ops.from_launcher

REPO = Path(__file__).resolve().parents[2]


def test_no_ops_module_outside_from_launcher_imports_the_launcher():
    offenders = []
    for path in sorted((REPO / "ops").rglob("*.py")):
        if path.parent.name == "from_launcher":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for name in names
                          if name.split(".")[0] == "optillm_proxy_launcher"]
    assert offenders == [], "import it through ops.from_launcher: " + ", ".join(offenders)


def test_everything_from_the_launcher_is_stdlib_only():
    names = ", ".join(ops.from_launcher.LAUNCHER_MODULES)
    code = ("import json, sys; import ops.from_launcher.layout, ops.from_launcher.plugins; "
            f"from ops.from_launcher import {names}; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    top = set(json.loads(done.stdout))
    foreign = sorted(top - set(sys.stdlib_module_names) - {"ops", "optillm_proxy_launcher"}
                     - {m for m in top if m.startswith("_")} - {"sitecustomize", "usercustomize"}
                     - {m for m in top if m.startswith("__editable__")})
    assert foreign == [], f"ops.from_launcher pulls in non-stdlib modules: {foreign}"


def test_the_launcher_modules_it_names_are_the_ones_it_gives():
    for name in ops.from_launcher.LAUNCHER_MODULES:
        assert getattr(ops.from_launcher, name).__name__ == f"optillm_proxy_launcher.{name}"
