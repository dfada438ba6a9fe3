"""The deployed layout, ports and routed approaches, read from layout.env beside this module.

layout.env is the one place these facts are written; install.sh sources it. This reader accepts
exactly the subset of shell assignment both agree on (see the file's header) and refuses
anything else, so a value can never mean one thing to bash and another here. Stdlib only: the
launcher imports it at start, opsctl through ops/from_launcher/layout.py, the bench scripts from a checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).with_name("layout.env")

_LINE = re.compile(r'([A-Z][A-Z0-9_]*)=(?:"([^"$`\\\']*(?:\$\{[A-Z][A-Z0-9_]*\}[^"$`\\\']*)*)"'
                   r"|([^\s\"$`\\']*(?:\$\{[A-Z][A-Z0-9_]*\}[^\s\"$`\\']*)*))")
_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class LayoutError(Exception):
    """layout.env holds a line outside the agreed subset; str() names the file and line."""


def read(path: Path = SOURCE) -> dict[str, str]:
    """KEY -> value, ${KEY} references expanded from keys defined earlier in the file."""
    facts: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise LayoutError(f"{path}:{number}: not KEY=value or KEY=\"value\": {raw!r}")
        key, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)

        def expand(ref: re.Match, number: int = number) -> str:
            if ref.group(1) not in facts:
                raise LayoutError(f"{path}:{number}: ${{{ref.group(1)}}} is not defined above")
            return facts[ref.group(1)]

        if key in facts:
            raise LayoutError(f"{path}:{number}: {key} is set twice")
        facts[key] = _REFERENCE.sub(expand, value)
    return facts


FACTS = read()

SERVICE = FACTS["SERVICE"]
SERVICE_USER = FACTS["SERVICE_USER"]
SOCKET_UNIT = FACTS["SOCKET_UNIT"]
OPTILLM_VERSION = FACTS["OPTILLM_VERSION"]
PROFILES = tuple(FACTS["PROFILES"].split())
DEFAULT_PROFILE = FACTS["DEFAULT_PROFILE"]
LISTEN_HOST = FACTS["LISTEN_HOST"]
LISTEN_PORT = int(FACTS["LISTEN_PORT"])
UPSTREAM_HOST = FACTS["UPSTREAM_HOST"]
UPSTREAM_PORT = int(FACTS["UPSTREAM_PORT"])
UPSTREAM_URL = FACTS["UPSTREAM_URL"]
BASE_MODEL = FACTS["BASE_MODEL"]
STRATEGY_PREFIXES = tuple(FACTS["STRATEGY_PREFIXES"].split())
LAUNCHER_REL = FACTS["LAUNCHER_REL"]
RELOAD_HELPER_REL = FACTS["RELOAD_HELPER_REL"]
RUNTIME_DIR = FACTS["RUNTIME_DIR"]
MANIFEST_REL = FACTS["MANIFEST_REL"]
ENV_FILE = FACTS["ENV_FILE"]
KEY_FILE = FACTS["KEY_FILE"]
UPSTREAM_KEY_FILE = FACTS["UPSTREAM_KEY_FILE"]
PROVIDER_FILE = FACTS["PROVIDER_FILE"]
