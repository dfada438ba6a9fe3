"""The Debian mirror for the box, read from the host's own apt configuration at run time.

No registry host is ever written into the repo: whatever this host installs Debian packages
from is what the box is bootstrapped from. The box's release is a parameter
(OPTILLM_PROXY_BOX_RELEASE); a host that lists only its own release (a Debian 12 CI machine
booting a Debian 13 box) lends the URI of its main archive, which serves every release.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Debian releases the box boots (systemd/Python pairs the project supports); the first is the default.
RELEASES = ("bookworm", "trixie")
# Each release's python3: which locks/py<X.Y>/ install.sh picks in its box.
RELEASE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
RELEASE_VARIABLE = "OPTILLM_PROXY_BOX_RELEASE"


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


class UnknownRelease(ValueError):
    pass


def box_release(environ=None) -> str:
    """The Debian release the box boots: $OPTILLM_PROXY_BOX_RELEASE, default the first of RELEASES."""
    value = (os.environ if environ is None else environ).get(RELEASE_VARIABLE, "").strip() or RELEASES[0]
    if value not in RELEASES:
        raise UnknownRelease(f"{RELEASE_VARIABLE}={value!r} is not a release the box boots: use one of "
                             f"{', '.join(RELEASES)}")
    return value


def _sources(apt_dir: Path) -> tuple[list[Path], list[Path]]:
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    lists = [p for p in [apt_dir / "sources.list"] if p.exists()]
    lists += sorted((apt_dir / "sources.list.d").glob("*.list"))
    return sources, lists


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str | None = None) -> str:
    """The URI this host uses for `suite` (deb822 .sources first, then the one-line lists); if the
    host lists no such suite, the URI of its main archive (the one serving any of RELEASES)."""
    suite = suite or box_release()
    sources, lists = _sources(apt_dir)
    uri = _from_sources_files(sources, suite) or _from_list_files(lists, suite)
    for other in RELEASES:
        if uri:
            break
        uri = _from_sources_files(sources, other) or _from_list_files(lists, other)
    if not uri:
        raise MirrorNotFound(
            f"no apt source for Debian {' or '.join(dict.fromkeys((suite, *RELEASES)))} in "
            f"{apt_dir}/sources.list.d/*.sources or {apt_dir}/sources.list: add the host's Debian "
            f"{suite} mirror to its apt configuration")
    return uri.rstrip("/")
