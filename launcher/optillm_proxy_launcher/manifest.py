"""The runtime manifest, optillm-proxy-runtime.json at a runtime's root: the one reader.

install.sh writes it when it builds a runtime; the launcher reads the profile from it before it
starts (so this module is stdlib-only and ships in the runtime), and ops (opsctl runtime, lint)
imports this same module. The format is a JSON object with these fields, all strings:

    profile          lean | full: which plugins the runtime can import (plugins.json "profiles")
    optillm_version  the optillm version the runtime was built with (0.3.12)
    lock_sha256      sha256 of the lock file the runtime was built from
    lock_file        that lock, relative to the runtime root (libexec/<profile>.txt)

Extra fields are ignored. From a shell: `python3 -I manifest.py RUNTIME_DIR FIELD` prints one
field (exit 1 and one line on stderr when it cannot).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    from optillm_proxy_launcher import layout as _layout
except ImportError:
    # Run as a script by a python without the package (a runtime's: it lives in libexec/): -I
    # leaves the script's own directory off sys.path, so name the package's parent.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    from optillm_proxy_launcher import layout as _layout

FILE_NAME = _layout.MANIFEST_REL
FIELDS = ("profile", "optillm_version", "lock_sha256", "lock_file")


class ManifestProblem(Exception):
    """The manifest is missing or unreadable; `missing` tells which, str() says why in one line."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def path_of(runtime: Path) -> Path:
    return runtime / FILE_NAME


def read(path: Path) -> dict:
    """The manifest at `path` as a dict; raises ManifestProblem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestProblem("file not found", missing=True) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestProblem(f"cannot read it ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestProblem(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestProblem("expected a JSON object")
    return data


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in FIELDS:
        print(f"usage: manifest.py RUNTIME_DIR {{{'|'.join(FIELDS)}}}", file=sys.stderr)
        return 2
    path = path_of(Path(argv[0]))
    try:
        value = read(path).get(argv[1])
    except ManifestProblem as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(value, str) or not value:
        print(f"{path}: no {argv[1]}", file=sys.stderr)
        return 1
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
