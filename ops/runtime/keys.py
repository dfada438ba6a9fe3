"""`opsctl key rotate`: a new proxy key, applied once (reload or restart), and proof that it took.

The hand-made procedure it replaces (RUNBOOK.md#rotate-the-proxy-key) is easy to get half right. Here: the new
key is written beside the old one (0600, created exclusively, never on a command line or in the
output), the launcher's own check (`opsctl runtime check`) must accept it, then it is applied by
ops/runtime/service.py: a reload while the service runs (a new launcher takes over, nothing waits),
else a restart; then the old key must get 401 and the new one must not. On any failure before that
the old key file is put back and the service is left alone.

`opsctl install` writes the key files through this module too (ops/install/steps.py; by hand:
`python -m ops.runtime.keys`): a first proxy key, and the move of an earlier install's
OPENAI_API_KEY= line into the upstream key file. Keys go straight from Python into 0600 files: never argv, the environment or any output.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from ops.from_launcher import settings
from ops.from_launcher.layout import PROXY_URL, SERVICE, Layout

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
        raise RotationFailed(f"the proxy did not answer at {url} after the new key was applied ({type(exc).__name__}): "
                             f"journalctl -u {SERVICE} -n 50") from None


def rotate(layout: Layout, system, check, url: str = PROXY_URL, apply=None) -> Rotation:
    """system: ops.runtime.upgrade.System (run, restart_service); check: () -> config_check.CheckResult;
    apply(layout, reasons, system) -> service.Applied (ops.runtime.service.apply_change)."""
    if apply is None:
        from ops.runtime.service import apply_change as apply
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
    applied = apply(layout, ["key-file"], system)
    verb = {"reloaded": "reload", "restarted": "restart"}.get(applied.action, applied.action)
    if applied.code != 0:
        os.replace(kept, key_file)
        apply(layout, ["key-file"], system)
        raise RotationFailed(f"the {verb} with the new key failed; the old key is back"
                             + (f": {applied.detail[-300:]}" if applied.detail else f" (journalctl -u {SERVICE})"))
    kept.unlink()
    old_status, new_status = key_status(url, old), key_status(url, key)
    if old_status != 401 or new_status == 401:
        raise RotationFailed(f"after the {verb} the old key gets {old_status} and the new one {new_status}: "
                             f"expected 401 and anything but 401; check {key_file} and journalctl -u {SERVICE}")
    return Rotation(
        f"rotated: {key_file} holds a new key (0600), applied by a {verb}; the proxy refuses the old "
        "one (401) and accepts the new "
        f"one (HTTP {new_status}). LiteLLM's requests get 401 until you give it the new key: put the content "
        f"of {key_file} (sudo cat {key_file}) into LiteLLM's environment as OPTILLM_PROXY_KEY and restart it, "
        "then check a strategy model through LiteLLM (RUNBOOK.md#rotate-the-proxy-key)")


# --- the key files install.sh writes ------------------------------------------------------------

ENV_KEY_LINE = re.compile(r"^\s*OPENAI_API_KEY=(.*)$")


def migrate_upstream_key(env_file: Path, key_file: Path, key_shown: str) -> str:
    """An env file from an earlier install may still hold OPENAI_API_KEY=, which is a credential now
    (LoadCredential=upstream-key). Returns `moved` (its value filled the absent or empty key file),
    `dropped` (the lines went: the key file already held that key, or the value was empty or the old
    placeholder), `conflict` (the key file holds another key: nothing touched, the operator decides)
    or "" (no such line). Each moved or dropped line becomes a comment."""
    lines = env_file.read_text(encoding="utf-8").splitlines(keepends=True)
    values = [m.group(1).strip().strip("'\"") for m in map(ENV_KEY_LINE.match, lines) if m]
    if not values:
        return ""
    value = values[-1]  # systemd applies the last assignment
    existing = key_file.read_text(encoding="utf-8").strip() if key_file.exists() else ""
    outcome = "dropped"
    if value and value != settings.UPSTREAM_KEY_PLACEHOLDER:
        if existing and existing != value:
            return "conflict"
        if not existing:
            key_file.unlink(missing_ok=True)
            write_exclusive(key_file, value + "\n")
            outcome = "moved"
    note = f"# OPENAI_API_KEY: moved to {key_shown} by install.sh (a credential, not a variable)\n"
    staged = env_file.with_name(env_file.name + ".install-tmp")
    staged.unlink(missing_ok=True)
    write_exclusive(staged, "".join(note if ENV_KEY_LINE.match(line) else line for line in lines))
    os.replace(staged, env_file)
    return outcome


USAGE = "usage: python -m ops.runtime.keys generate KEY_FILE | migrate ENV_FILE UPSTREAM_KEY_FILE SHOWN_NAME"


def main(argv: list[str]) -> int:
    """The by-hand entry: `generate KEY_FILE` writes a new proxy key into a file that must not exist;
    `migrate ...` prints migrate_upstream_key's outcome. Exit 0, 1 on a file error, 2 on usage."""
    try:
        if argv[:1] == ["generate"] and len(argv) == 2:
            write_exclusive(Path(argv[1]), new_key() + "\n")
        elif argv[:1] == ["migrate"] and len(argv) == 4:
            print(migrate_upstream_key(Path(argv[1]), Path(argv[2]), argv[3]))
        else:
            print(USAGE, file=sys.stderr)
            return EXIT_USAGE
    except OSError as exc:
        print(f"ops.runtime.keys: {exc.filename or argv[1]}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    except UnicodeDecodeError as exc:
        print(f"ops.runtime.keys: {argv[1]} or {argv[2]}: not UTF-8 text ({exc.reason}): fix it by hand", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
