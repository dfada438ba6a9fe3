"""A test that needs a real tool fails, never skips, when the tool is missing, with what to install.

scripts/test.sh (the README's test command, what CI runs) installs every tool named here.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(tool: str, package: str) -> str:
    """The tool's path, or the test fails naming the Debian package that brings it."""
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is missing: apt-get install {package} (scripts/test.sh installs it)")
    return path


def require_tools(tools: dict[str, str]) -> None:
    """Every tool (name -> Debian package) on PATH, or one failure naming all that are missing."""
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        packages = " ".join(dict.fromkeys(tools[tool] for tool in missing))
        pytest.fail(f"missing {', '.join(missing)}: apt-get install {packages} (scripts/test.sh installs them)")


def require_root(what: str, why: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"{what} need root ({why}): run them via `sudo scripts/test.sh` or as root")
