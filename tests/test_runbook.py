"""The RUNBOOK is what the person on call opens: it stays short, every alert's `runbook_url` lands
on that alert's own entry, and every doc anchor the code prints (install.sh, opsctl, the launcher,
the shipped config and playbooks) names a heading that exists.

`runbook_url` is a path relative to the repository's root (`RUNBOOK.md#paged-<alert>`): there is
no public URL, and an operator's Alertmanager template prefixes wherever their copy is browsable.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_docs import _anchors

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "RUNBOOK.md"
RULES = REPO / "etc" / "prometheus" / "optillm-proxy.rules.yml"
MAX_LINES = 400
# Where the code that operators see lives; tests/ and docs are not printed to anyone.
CODE = ("install.sh", "ops", "launcher", "etc", "systemd", "ansible", "scripts", "tools", "bench")
# `RUNBOOK.md#anchor`, `docs/x.md#anchor`, `ansible/README.md#anchor` in any text.
DOC_ANCHOR = re.compile(r"\b((?:RUNBOOK|README)\.md|docs/[\w/.-]+\.md|[\w-]+/README\.md)#([\w-]+)")


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_the_runbook_fits_on_call():
    lines = len(RUNBOOK.read_text().splitlines())
    assert lines <= MAX_LINES, f"RUNBOOK.md has {lines} lines; at most {MAX_LINES}: move what is not a task or a page to docs/"


def test_every_alert_has_its_own_runbook_url_that_resolves():
    urls = {}
    anchors = _anchors(RUNBOOK)
    for name, rule in alerts().items():
        url = rule.get("annotations", {}).get("runbook_url")
        assert url, f"{name} has no runbook_url annotation"
        path, _, anchor = url.partition("#")
        assert path == "RUNBOOK.md", f"{name}: runbook_url {url} does not point into RUNBOOK.md"
        assert anchor in anchors, f"{name}: runbook_url {url} names no heading of RUNBOOK.md"
        assert anchor == f"paged-{name.lower()}", f"{name}: runbook_url {url} is not its own `## Paged: {name}`"
        urls.setdefault(url, []).append(name)
    shared = {url: names for url, names in urls.items() if len(names) > 1}
    assert not shared, f"alerts sharing a runbook_url: {shared}"
    assert urls, "the rules hold no alert"


def test_every_runbook_page_is_an_alert_that_exists():
    pages = re.findall(r"^## Paged: (\S+)$", RUNBOOK.read_text(), re.M)
    assert sorted(pages) == sorted(alerts()), "a `## Paged:` entry for each alert, and none for an alert that is gone"


def _code_files() -> list[Path]:
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "--", *CODE], capture_output=True, text=True,
                            check=True).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file() and not name.endswith(".md")]


def printed_anchors() -> list[tuple[str, str, str]]:
    """(file, doc, anchor) of every doc anchor in the code operators run or read."""
    found = []
    for path in _code_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [(path.relative_to(REPO).as_posix(), doc, anchor) for doc, anchor in DOC_ANCHOR.findall(text)]
    return found


def test_the_code_prints_doc_anchors():
    """The scan below sees what it must: install.sh's and opsctl's pointers into the RUNBOOK."""
    files = {file for file, _, _ in printed_anchors()}
    assert {"ops/runtime/keys.py", "etc/prometheus/optillm-proxy.rules.yml"} <= files, files


@pytest.mark.parametrize("file,doc,anchor", printed_anchors(), ids=lambda v: str(v))
def test_every_doc_anchor_the_code_prints_resolves(file, doc, anchor):
    target = REPO / doc
    assert target.exists(), f"{file} points at {doc}#{anchor}: {doc} does not exist"
    assert anchor in _anchors(target), f"{file} points at {doc}#{anchor}: {doc} has no such heading"


def test_no_code_points_at_a_numbered_runbook_section():
    """The RUNBOOK's headings are tasks and pages, not numbers: a pointer names an anchor."""
    stale = [f"{path.relative_to(REPO)}: {match.group(0)}" for path in _code_files()
             for match in re.finditer(r"RUNBOOK(?:\.md)?,? (?:section|§) ?\d+\w?", path.read_text(errors="replace"))]
    assert not stale, stale
