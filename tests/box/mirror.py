"""The Debian mirror for the box, read from the host's own apt configuration at run time.

No registry host is ever written into the repo: whatever this host installs Debian packages
from is what the box is bootstrapped from.
"""

from __future__ import annotations

import re
from pathlib import Path

SUITE = "bookworm"


class MirrorNotFound(RuntimeError):
    pass


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
            continue
        if line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
        if match:
            current[match.group(1).lower()] = match.group(2).strip()
    if current:
        stanzas.append(current)
    return stanzas


def _from_sources_files(files: list[Path], suite: str) -> str | None:
    for path in files:
        for stanza in _deb822_stanzas(path.read_text(errors="replace")):
            if "deb" not in stanza.get("types", "").split():
                continue
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            if suite in stanza.get("suites", "").split() and stanza.get("uris"):
                return stanza["uris"].split()[0]
    return None


def _from_list_files(files: list[Path], suite: str) -> str | None:
    # One-line format: deb [options] URI SUITE COMPONENTS...
    pattern = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            match = pattern.match(line.strip())
            if match and match.group(2) == suite:
                return match.group(1)
    return None


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The URI this host uses for `suite` (deb822 .sources first, then the one-line lists)."""
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    lists = [p for p in [apt_dir / "sources.list"] if p.exists()]
    lists += sorted((apt_dir / "sources.list.d").glob("*.list"))
    uri = _from_sources_files(sources, suite) or _from_list_files(lists, suite)
    if not uri:
        raise MirrorNotFound(
            f"no apt source for Debian {suite} in {apt_dir}/sources.list.d/*.sources or "
            f"{apt_dir}/sources.list: add the host's Debian {suite} mirror to its apt configuration")
    return uri.rstrip("/")
