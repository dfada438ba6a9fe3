"""The box's base root filesystem: Debian minbase with a real systemd, bootstrapped once per release.

The release is $OPTILLM_PROXY_BOX_RELEASE (bookworm or trixie, see mirror.py). Cached as
$OPTILLM_PROXY_TEST_CACHE/box-base-<recipe hash>/ (the hash covers the release) and reused by
every session; a new recipe (release, package list, host CA certificates, RECIPE_VERSION) builds a
new base and removes the older bases of the same release only, so each release keeps its own.
Each session boots a copy (see machine.py), never the base itself.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests.box.errors import BoxError
from tests.box.mirror import box_release, host_mirror
from tests.cache import build_once, cache_dir

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


def recipe_hash(release: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{RECIPE_VERSION}|{release}|minbase|{','.join(PACKAGES)}|{','.join(MASKED_UNITS)}".encode())
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


def _bootstrap(root: Path, log: Path, release: str) -> None:
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", release, str(root),
          host_mirror(suite=release)], log, "debootstrap")


def base_release(base: Path) -> str:
    """The codename a built base rootfs is (its /etc/os-release), '' if unreadable."""
    try:
        text = (base / "etc/os-release").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


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


def _build(root: Path, log: Path, release: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _bootstrap(root, log, release)
    _trust_host_cas(root, log)
    _quiet_background_jobs(root)
    _slim(root)


def _remove_older_bases(cache: Path, name: str, release: str) -> None:
    """Other recipes' bases of the same release, and logs whose base is gone (other releases stay)."""
    for old in cache.glob("box-base-*"):
        if old.name.startswith(name) or not old.is_dir():
            continue
        if base_release(old) in (release, ""):
            shutil.rmtree(old, ignore_errors=True)
    for log in cache.glob("box-base-*.log"):
        if not log.name.startswith(name) and not log.with_suffix("").is_dir():
            log.unlink(missing_ok=True)


def base_rootfs(release: str | None = None) -> tuple[Path, float]:
    """Path of the cached base rootfs of `release` (default: box_release()), building it if needed;
    and seconds spent building (0 if reused)."""
    release = release or box_release()
    cache = cache_dir()
    name = f"box-base-{recipe_hash(release)}"
    log = cache / f"{name}.log"

    def build(root: Path) -> None:
        log.write_text("")
        _build(root, log, release)

    return build_once(cache / name, build, lock=".box-base.lock",
                      prune=lambda: _remove_older_bases(cache, name, release))
