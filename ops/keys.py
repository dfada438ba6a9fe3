"""`opsctl key rotate`: a new proxy key, one checked restart, and proof that it took.

The hand-made procedure it replaces (RUNBOOK section 6) is easy to get half right. Here: the new
key is written beside the old one (0600, created exclusively, never on a command line or in the
output), the launcher's own check (`opsctl runtime check`) must accept it, then one restart (the
launcher drains, the socket queues), then the old key must get 401 and the new one must not. On any
failure before the restart the old key file is put back and the service is left alone.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ops.layout import PROXY_URL, SERVICE, Layout

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KEY_PREFIX = "opx-"


class RotationFailed(Exception):
    """str() is the one line for the operator."""


@dataclass(frozen=True)
class Rotation:
    message: str


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def write_exclusive(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def key_status(url: str, key: str) -> int:
    """The HTTP status /v1/models answers for `key` (the proxy's own key check decides 401)."""
    import httpx

    try:
        return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code
    except httpx.HTTPError as exc:
        raise RotationFailed(f"the proxy did not answer at {url} after the restart ({type(exc).__name__}): "
                             f"journalctl -u {SERVICE} -n 50") from None


def rotate(layout: Layout, system, check, url: str = PROXY_URL) -> Rotation:
    """system: ops.upgrade.System (run, restart_service); check: () -> config_check.CheckResult."""
    key_file = layout.key_file
    try:
        old = key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RotationFailed(f"cannot read {key_file}: {exc.strerror} (run install.sh first)") from None
    key = new_key()
    staged = key_file.with_name(key_file.name + ".new")
    kept = key_file.with_name(key_file.name + ".old")
    staged.unlink(missing_ok=True)
    write_exclusive(staged, key + "\n")
    os.replace(key_file, kept)
    os.replace(staged, key_file)
    verdict = check()
    if not verdict.accepted:
        os.replace(kept, key_file)
        raise RotationFailed(f"the launcher would refuse the new key, so nothing changed: {verdict.line}")
    code, out = system.restart_service()
    if code != 0:
        os.replace(kept, key_file)
        system.restart_service()
        raise RotationFailed(f"the restart with the new key failed; the old key is back: {out.strip()[-300:]}")
    kept.unlink()
    old_status, new_status = key_status(url, old), key_status(url, key)
    if old_status != 401 or new_status == 401:
        raise RotationFailed(f"after the restart the old key gets {old_status} and the new one {new_status}: "
                             f"expected 401 and anything but 401; check {key_file} and journalctl -u {SERVICE}")
    return Rotation(
        f"rotated: {key_file} holds a new key (0600); the proxy refuses the old one (401) and accepts the new "
        f"one (HTTP {new_status}). LiteLLM's requests get 401 until you give it the new key: put the content "
        f"of {key_file} (sudo cat {key_file}) into LiteLLM's environment as OPTILLM_PROXY_KEY and restart it, "
        "then: sudo opsctl smoke --all")
