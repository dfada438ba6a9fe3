"""A fleet of booted boxes for the Ansible tests: each box in its own network namespace on a
private subnet the test makes, with sshd, reached by the controller over ssh.

The layer: the base rootfs (base.py) plus openssh-server, installed once with the host's apt in
a chroot and cached as $OPTILLM_PROXY_TEST_CACHE/box-fleet-<recipe hash>/ (the base's hash is
part of it, so a new base makes a new layer). A separate layer, so that the single box of the
other box tests stays as it is.

The network: a controller namespace holding a bridge at CONTROLLER_ADDRESS, and per box a
namespace with one end of a veth pair (eth0, SUBNET.1x) whose other end is on the bridge. The
controller (ansible-playbook, the testinfra suite) runs in the controller namespace; nothing of
the host's own network is used or addressed, and each box's loopback is its own (its proxy on
127.0.0.1:4020 and its LiteLLM on 127.0.0.1:4000 collide with nothing).

Offline installs: the boxes reach no package index. install.sh gets uv from a wheelhouse bound
into each box (pip --no-index) and every runtime from the host's uv cache (UV_OFFLINE), as an
operator with a local mirror would; INSTALL_ENV is that environment, handed to the role.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.box.base import _run as run_logged
from tests.box.base import base_rootfs
from tests.box.errors import BoxError
from tests.box.machine import INSTALL_ENV as BOX_INSTALL_ENV
from tests.box.machine import Box
from tests.cache import COMPLETE, build_once, cache_dir

FLEET_RECIPE_VERSION = "2"
FLEET_PACKAGES = ("openssh-server",)
REPO = Path(__file__).resolve().parents[2]
UV_LOCK = REPO / "locks" / "uv.txt"
BOX_WHEELHOUSE = "/var/cache/optillm-wheelhouse"
# The private /24 of a fleet: only ever configured inside namespaces the fixture creates.
SUBNET = "10.218.18"
CONTROLLER_ADDRESS = f"{SUBNET}.1"
INSTALL_ENV = {**BOX_INSTALL_ENV, "UV_OFFLINE": "1", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": BOX_WHEELHOUSE}
NAMESPACE_PREFIX = "opxf"


def _run(cmd: list[str], what: str) -> str:
    """cmd's stdout; BoxError with its stderr if it fails (the layer's build steps log through base._run)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BoxError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


# --- the layer ------------------------------------------------------------------------------------

def _layer_hash(base: Path) -> str:
    recipe = f"{FLEET_RECIPE_VERSION}|{base.name}|{','.join(FLEET_PACKAGES)}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _install_packages(root: Path, log: Path) -> None:
    # No service may start inside the chroot while the packages install.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # A clean environment for apt in the chroot (nothing of the caller's leaks in).
    chroot = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8",
              "chroot", str(root)]
    try:
        run_logged([*chroot, "apt-get", "update", "-qq"], log, "apt-get update in the fleet layer")
        run_logged([*chroot, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *FLEET_PACKAGES],
                   log, "apt-get install openssh-server in the fleet layer")
    finally:
        policy.unlink(missing_ok=True)
    run_logged([*chroot, "apt-get", "clean"], log, "apt-get clean in the fleet layer")
    # Host keys are made per box and run (FleetBox.prepare), never shared through the cache.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d/fleet-test.conf").write_text(
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UseDNS no\n")


def fleet_rootfs() -> tuple[Path, float]:
    """The cached fleet layer (built if needed) and the seconds spent building (0 if reused)."""
    base, _ = base_rootfs()
    cache = cache_dir()
    name = f"box-fleet-{_layer_hash(base)}"
    log = cache / f"{name}.log"

    def build(layer: Path) -> None:
        log.write_text("")
        run_logged(["cp", "-a", "--reflink=auto", str(base), str(layer)], log, "copying the base rootfs")
        (layer / COMPLETE).unlink(missing_ok=True)
        _install_packages(layer, log)

    def prune() -> None:
        for old in cache.glob("box-fleet-*"):
            if old.name.startswith(name):
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    return build_once(cache / name, build, lock=".box-fleet.lock", prune=prune)


def wheelhouse() -> Path:
    """locks/uv.txt's wheels (hashes required), downloaded once by the host's pip: what
    install.sh's uv bootstrap installs from inside a box that reaches no index."""
    sha = hashlib.sha256(UV_LOCK.read_bytes()).hexdigest()[:12]
    root = cache_dir() / "fleet-wheels"
    # The pip of the venv scripts/test.sh bootstraps uv into (the dev venv has no pip).
    pip = cache_dir() / "tools" / "bin" / "pip"

    def download(path: Path) -> None:
        if not pip.exists():
            raise BoxError(f"no {pip}: run scripts/test.sh once (it bootstraps uv there with pip)")
        _run([str(pip), "download", "-q", "--disable-pip-version-check", "--require-hashes",
              "--no-deps", "--only-binary=:all:", "-d", str(path), "-r", str(UV_LOCK)],
             "pip download of locks/uv.txt for the fleet's wheelhouse")

    def prune() -> None:
        for old in root.iterdir():
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    return build_once(root / sha, download, lock=".lock", prune=prune)[0]


# --- the network ----------------------------------------------------------------------------------

def _ip(*args: str) -> str:
    return _run(["ip", *args], "ip " + " ".join(args))


def remove_stale_namespaces() -> None:
    """Namespaces of fleets whose session died without teardown (the owning pid is in the name)."""
    for name in _ip("netns", "list").split():
        if not name.startswith(NAMESPACE_PREFIX):
            continue
        owner = name[len(NAMESPACE_PREFIX):].split("x", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Subnet:
    """The controller namespace with the bridge, and one namespace per box (made by add_box)."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    namespaces: list[str] = field(default_factory=list)

    @property
    def controller(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.tag}xc"

    def create(self) -> None:
        remove_stale_namespaces()
        self._add_namespace(self.controller)
        _ip("-n", self.controller, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.controller, "addr", "add", f"{CONTROLLER_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.controller, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_box(self, index: int) -> tuple[str, str]:
        """Namespace and address of box `index` (1, 2, ...), wired to the bridge."""
        name = f"{NAMESPACE_PREFIX}{self.tag}x{index}"
        address = f"{SUBNET}.{10 + index}"
        self._add_namespace(name)
        _ip("-n", self.controller, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
            "netns", name)
        _ip("-n", self.controller, "link", "set", f"v{index}", "master", "br0", "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        return name, address

    def exec_argv(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def destroy(self) -> None:
        # Deleting a namespace removes its veth end, and with it the peer on the bridge.
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()


# --- the boxes ------------------------------------------------------------------------------------

@dataclass
class FleetBox:
    """One booted box of the fleet: its Box, namespace, address and ssh host key."""

    box: Box
    name: str
    namespace: str
    address: str
    host_public_key: str = ""

    @classmethod
    def prepare(cls, layer: Path, wheels: Path, index: int, namespace: str, address: str,
                authorized_key: str) -> "FleetBox":
        box = Box.from_base(layer, REPO, tag=f"fleet{index}")
        box.nspawn_args = (f"--network-namespace-path=/run/netns/{namespace}",
                           f"--bind-ro={wheels}:{BOX_WHEELHOUSE}")
        name = f"fleet{index}"
        (box.root / "etc/hostname").write_text(name + "\n")
        ssh_dir = box.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(authorized_key)
        (ssh_dir / "authorized_keys").chmod(0o600)
        key = box.root / "etc/ssh/ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], "ssh-keygen (host key)")
        public = key.with_suffix(".pub").read_text().split()
        return cls(box=box, name=name, namespace=namespace, address=address,
                   host_public_key=" ".join(public[:2]))

    def wait_sshd(self, timeout: float = 60.0) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.box.run("systemctl is-active ssh").stdout.strip() == "active":
                return
            time.sleep(0.3)
        raise BoxError(f"sshd not active in {self.name} after {timeout}s:\n"
                       f"{self.box.run('systemctl status ssh --no-pager').stdout}")
