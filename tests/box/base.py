"""The box's base root filesystem: Debian bookworm minbase with a real systemd, bootstrapped once.

Cached as $OPTILLM_PROXY_TEST_CACHE/box-base-<recipe hash>/ and reused by every session; a new
recipe (package list, host CA certificates, this file's RECIPE_VERSION) builds a new base and
removes the old ones. Each session boots a copy (see machine.py), never the base itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from tests.box.cache import cache_dir
from tests.box.errors import BoxError
from tests.box.mirror import SUITE, host_mirror

RECIPE_VERSION = "1"
# systemd and friends to boot; python3-venv for install.sh's uv bootstrap; curl/iproute2/procps
# for operators' checks (ss, ps) that the tests and the testinfra suite use too.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates",
            "curl", "iproute2", "procps", "sudo")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# Timers that would start apt or cleanup jobs in the middle of a test.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "systemd-tmpfiles-clean.timer",
                "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer")


def host_ca_certs() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []


def recipe_hash() -> str:
    digest = hashlib.sha256()
    digest.update(f"{RECIPE_VERSION}|{SUITE}|minbase|{','.join(PACKAGES)}|{','.join(MASKED_UNITS)}".encode())
    for cert in host_ca_certs():
        digest.update(cert.name.encode() + cert.read_bytes())
    return digest.hexdigest()[:12]


def _run(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BoxError(f"{what} failed (exit {proc.returncode}); full log {log}:\n{tail}")


def _bootstrap(root: Path, log: Path) -> None:
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root),
          host_mirror()], log, "debootstrap")


def _trust_host_cas(root: Path, log: Path) -> None:
    # The registries are reached through the host's extra CAs; without them pip/uv in the box
    # fail with "invalid peer certificate: UnknownIssuer".
    target = root / HOST_CA_DIR.relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    for cert in host_ca_certs():
        shutil.copy2(cert, target / cert.name)
    _run(["chroot", str(root), "update-ca-certificates"], log, "update-ca-certificates in the box")


def _quiet_background_jobs(root: Path) -> None:
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _slim(root: Path) -> None:
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (root / "etc/hostname").write_text("optillm-box\n")


def _build(root: Path, log: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _bootstrap(root, log)
    _trust_host_cas(root, log)
    _quiet_background_jobs(root)
    _slim(root)


def base_rootfs() -> tuple[Path, float]:
    """Path of the cached base rootfs, building it if needed; and seconds spent building (0 if reused)."""
    cache = cache_dir()
    name = f"box-base-{recipe_hash()}"
    base = cache / name
    with open(cache / ".box-base.lock", "w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)
        if (base / ".complete").exists():
            return base, 0.0
        start = time.monotonic()
        building = cache / f"{name}.building"
        log = cache / f"{name}.log"
        log.write_text("")
        _build(building, log)
        for old in cache.glob("box-base-*"):
            if old.name.startswith(name):  # this recipe's dir being built and its log
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        building.rename(base)
        (base / ".complete").write_text(recipe_hash() + "\n")
        return base, time.monotonic() - start
