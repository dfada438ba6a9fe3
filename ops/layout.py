"""Where install.sh puts things: the one place the Python side learns the deployed layout.

install.sh carries the same values in its header (bash cannot import this module); a test
(tests/test_layout_matches_install.py) fails if the two ever disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVICE = "optillm-proxy"
SERVICE_USER = "optillm-proxy"

LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 4020
PROXY_URL = f"http://{LISTEN_HOST}:{LISTEN_PORT}"
UPSTREAM_URL = "http://127.0.0.1:4000/v1"
BASE_MODEL = "jerry-xl"

# The four strategies the gateway routes by model-name prefix (core approaches in 0.3.12).
STRATEGY_PREFIXES = ("moa", "bon", "plansearch", "self_consistency")

OPTILLM_VERSION = "0.3.12"
PROFILES = ("lean", "full")
DEFAULT_PROFILE = "lean"
# How many runtimes an upgrade keeps besides `current` (the previous one is the rollback target).
KEEP_RUNTIMES = 2


@dataclass(frozen=True)
class Layout:
    """Deployed paths, optionally staged under a root (install.sh --root DIR)."""

    root: Path = Path("/")

    def _p(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def prefix(self) -> Path:
        return self._p("/opt/optillm-proxy")

    @property
    def runtimes(self) -> Path:
        return self.prefix / "runtimes"

    @property
    def current(self) -> Path:
        """Symlink to the runtime the unit runs (a venv with the launcher in libexec/)."""
        return self.prefix / "current"

    @property
    def previous(self) -> Path:
        return self.prefix / "previous"

    @property
    def tools(self) -> Path:
        """uv and opsctl live here, apart from the service runtime."""
        return self.prefix / "tools"

    @property
    def conf_dir(self) -> Path:
        return self._p("/etc/optillm-proxy")

    @property
    def env_file(self) -> Path:
        return self.conf_dir / "env"

    @property
    def key_file(self) -> Path:
        return self.conf_dir / "api-key"

    @property
    def state_dir(self) -> Path:
        """The service user's home (StateDirectory=)."""
        return self._p("/var/lib/optillm-proxy")

    @property
    def provider_file(self) -> Path:
        """0.3.12's proxy plugin reads ~/.optillm/proxy_config.yaml of the service user."""
        return self.state_dir / ".optillm" / "proxy_config.yaml"

    @property
    def unit_file(self) -> Path:
        return self._p(f"/etc/systemd/system/{SERVICE}.service")

    @property
    def dropin_dir(self) -> Path:
        return self._p(f"/etc/systemd/system/{SERVICE}.service.d")

    @property
    def opsctl_link(self) -> Path:
        return self._p("/usr/local/bin/opsctl")

    def launcher(self, runtime: Path | None = None) -> Path:
        return (runtime or self.current) / "libexec" / "optillm-proxy-launcher.py"

    def runtime_manifest(self, runtime: Path | None = None) -> Path:
        """JSON written by install.sh: profile, optillm version, lock sha256."""
        return (runtime or self.current) / "optillm-proxy-runtime.json"


DEFAULT = Layout()
