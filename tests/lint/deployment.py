"""A throw-away deployment for lint tests: the corpus's good files copied into a temp dir
(secrets 0600, a freshly generated proxy key, a LiteLLM key in the upstream key file and none in
the env file), a small runtime tree, and helpers to break them."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
from pathlib import Path

from ops.lint import engine
from ops.lint.context import Context, Inputs
from ops.lint.finding import Finding

GOOD = Path(__file__).parent / "corpus" / "good"
REPO = Path(__file__).resolve().parents[2]

LOCK = """\
# lint corpus lock (uv pip compile style)
numpy==1.26.4 \\
    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000
    # via optillm
optillm==0.3.12 \\
    --hash=sha256:1111111111111111111111111111111111111111111111111111111111111111
pywin32==306 ; sys_platform == 'win32' \\
    --hash=sha256:2222222222222222222222222222222222222222222222222222222222222222
"""


# What the upstream key file holds (a LiteLLM virtual key: sk- is fine here, unlike the proxy key).
UPSTREAM_KEY = "sk-litellm-virtual-key-for-tests"


def generated_key() -> str:
    """The form install.sh generates: opx- + 43 base64url chars (32 random bytes)."""
    return "opx-" + secrets.token_urlsafe(32)


class Deployment:
    def __init__(self, root: Path):
        self.root = root
        self.unit = root / "systemd" / "optillm-proxy.service"
        self.socket = root / "systemd" / "optillm-proxy.socket"
        self.env_file = root / "etc" / "env"
        self.key_file = root / "etc" / "api-key"
        self.upstream_key_file = root / "etc" / "upstream-key"
        self.proxy_config = root / "home" / ".optillm" / "proxy_config.yaml"
        self.litellm_config = root / "litellm.yaml"
        self.venv = root / "runtime"
        for d in (self.unit.parent, self.env_file.parent, self.proxy_config.parent):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        shutil.copy(GOOD / "optillm-proxy.service", self.unit)
        shutil.copy(GOOD / "optillm-proxy.socket", self.socket)
        shutil.copy(GOOD / "env", self.env_file)
        self.key_file.write_text(generated_key() + "\n")
        self.upstream_key_file.write_text(UPSTREAM_KEY + "\n")
        shutil.copy(GOOD / "proxy_config.yaml", self.proxy_config)
        shutil.copy(GOOD / "litellm.yaml", self.litellm_config)
        for secret in (self.env_file, self.key_file, self.upstream_key_file):
            secret.chmod(0o600)
        self.proxy_config.chmod(0o644)
        self.build_runtime()

    @property
    def site_packages(self) -> Path:
        return self.venv / "lib" / "python3.11" / "site-packages"

    def build_runtime(self, profile: str = "lean", dists=None, lock: str = LOCK) -> None:
        """A stub runtime: dist metadata only, no package code (optillm-internals skips it)."""
        shutil.rmtree(self.venv, ignore_errors=True)
        sp = self.site_packages
        for name, version in (dists or {"optillm": "0.3.12", "numpy": "1.26.4"}).items():
            info = sp / f"{name}-{version}.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n")
        libexec = self.venv / "libexec"
        libexec.mkdir(parents=True)
        (libexec / f"{profile}.txt").write_text(lock)
        shutil.copy(REPO / "launcher" / "plugins.json", libexec / "plugins.json")
        self.manifest = self.venv / "optillm-proxy-runtime.json"
        self.manifest.write_text(json.dumps({
            "profile": profile, "optillm_version": "0.3.12",
            "lock_sha256": hashlib.sha256(lock.encode()).hexdigest(),
            "lock_file": f"libexec/{profile}.txt"}))

    # --- breaking things -----------------------------------------------------------------

    def path(self, kind: str) -> Path:
        return {"unit": self.unit, "socket": self.socket, "env": self.env_file, "key": self.key_file,
                "upstream": self.upstream_key_file,
                "provider": self.proxy_config, "litellm": self.litellm_config,
                "manifest": self.manifest}[kind]

    def replace(self, kind: str, old: str, new: str) -> None:
        p = self.path(kind)
        text = p.read_text()
        assert old in text, f"{old!r} not in {p}"
        p.write_text(text.replace(old, new, 1))

    def append(self, kind: str, text: str) -> None:
        p = self.path(kind)
        p.write_text(p.read_text() + text)

    def write(self, kind: str, text: str) -> None:
        self.path(kind).write_text(text)

    def server_py(self, text: str) -> Path:
        """Give the stub runtime an optillm package whose server.py is `text`."""
        path = self.site_packages / "optillm" / "server.py"
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").unlink(missing_ok=True)
        (path.parent / "__init__.py").write_text('__version__ = "0.3.12"\n')
        path.unlink(missing_ok=True)  # maybe a hardlink into a cached runtime (adopt_packages)
        path.write_text(text)
        return path

    def adopt_packages(self, runtime: Path) -> None:
        """Hardlink what the patch points rely on from a real runtime into the stub's site-packages:
        optillm (its plugins), openai and werkzeug (with its metadata). Written files are unlinked
        first (server_py), never written through into the runtime."""
        (real,) = runtime.glob("lib/python3*/site-packages")
        names = ["optillm", "openai", "werkzeug", *(p.name for p in real.glob("werkzeug-*.dist-info"))]
        self.site_packages.mkdir(parents=True, exist_ok=True)
        for name in names:
            subprocess.run(["cp", "-al", str(real / name), str(self.site_packages / name)], check=True)

    def dropin(self, name: str, text: str) -> Path:
        d = self.unit.parent / (self.unit.name + ".d")
        d.mkdir(exist_ok=True)
        (d / name).write_text(text)
        return d / name

    # --- running lint --------------------------------------------------------------------

    def inputs(self, with_litellm: bool = True, with_venv: bool = True) -> Inputs:
        return Inputs(unit=self.unit, env_file=self.env_file, key_file=self.key_file,
                      upstream_key_file=self.upstream_key_file, proxy_config=self.proxy_config,
                      litellm_config=self.litellm_config if with_litellm else None,
                      venv=self.venv if with_venv else None, venv_explicit=with_venv,
                      socket=self.socket)

    def lint(self, process_env=None, **kw) -> list[Finding]:
        return engine.run(Context(self.inputs(**kw), process_env=process_env or {}))

    def cli_args(self) -> list[str]:
        return ["lint", "--unit", str(self.unit), "--socket", str(self.socket), "--env-file", str(self.env_file),
                "--key-file", str(self.key_file), "--upstream-key-file", str(self.upstream_key_file),
                "--proxy-config", str(self.proxy_config),
                "--litellm-config", str(self.litellm_config), "--venv", str(self.venv)]
