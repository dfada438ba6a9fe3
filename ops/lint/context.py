"""The inputs of one lint run, each read at most once and only when a rule asks for it.

A file that cannot be read or parsed is recorded as a load problem (reported by the
file-missing / file-unreadable rules) and its parsed value is None, so rules about its
content simply have nothing to say.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping

from ops.layout import DEFAULT, LISTEN_HOST, LISTEN_PORT, UPSTREAM_URL, Layout
from ops.lint.optillm_facts import DEFAULT_PORT, PLUGIN_SLUGS
from ops.lint.readers.envfile import EnvFile, parse_env_file
from ops.lint.readers.execstart import OptillmCommand, parse_exec_start
from ops.lint.readers.runtime import Dist, installed_dists, read_manifest
from ops.lint.readers.text import Unreadable, read_text
from ops.lint.readers.unitfile import Directive, UnitFile, read_unit
from ops.lint.readers.yamlfile import LineDict, YamlError, load_yaml


@dataclass(frozen=True)
class Inputs:
    unit: Path
    env_file: Path
    key_file: Path
    upstream_key_file: Path
    proxy_config: Path
    litellm_config: Path | None = None
    venv: Path | None = None
    venv_explicit: bool = False

    @classmethod
    def defaults(cls, layout: Layout = DEFAULT, **given) -> "Inputs":
        """Paths install.sh uses, overridden by what was given (None = not given)."""
        venv = given.get("venv")
        explicit = venv is not None
        if venv is None and layout.current.exists():
            venv = layout.current
        return cls(
            unit=given.get("unit") or layout.unit_file,
            env_file=given.get("env_file") or layout.env_file,
            key_file=given.get("key_file") or layout.key_file,
            upstream_key_file=given.get("upstream_key_file") or layout.upstream_key_file,
            proxy_config=given.get("proxy_config") or layout.provider_file,
            litellm_config=given.get("litellm_config"),
            venv=venv,
            venv_explicit=explicit,
        )


@dataclass(frozen=True)
class LoadProblem:
    kind: str  # "missing" or "unreadable"
    input: str  # which input: unit, env-file, key-file, upstream-key-file, proxy-config, litellm-config, venv
    path: str
    line: int
    message: str


@dataclass
class Runtime:
    path: Path
    manifest_path: Path
    manifest: dict | None
    dists: dict[str, Dist]
    plugins_path: Path
    plugins: dict | None  # slug -> {"module", "profiles", "risk"}
    pythons: dict = field(default_factory=dict)  # X.Y -> {"profiles", "full_unavailable"}

    @property
    def profile(self) -> str | None:
        p = (self.manifest or {}).get("profile")
        return p if isinstance(p, str) else None

    @property
    def python(self) -> str | None:
        """X.Y of the runtime's interpreter: its lib/python3.X directory (what really runs)."""
        found = sorted(self.path.glob("lib/python3.*/site-packages"))
        return found[0].parent.name.removeprefix("python") if found else None


@dataclass
class ExecStart:
    directive: Directive
    command: OptillmCommand


@dataclass
class Context:
    inputs: Inputs
    process_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    load_problems: list[LoadProblem] = field(default_factory=list)

    def _problem(self, kind: str, name: str, path, message: str, line: int = 0) -> None:
        self.load_problems.append(LoadProblem(kind, name, str(path), line, message))

    def _text(self, name: str, path: Path) -> str | None:
        try:
            return read_text(path)
        except Unreadable as exc:
            kind = "missing" if str(exc) == "file not found" else "unreadable"
            self._problem(kind, name, path, str(exc))
            return None

    def _yaml_mapping(self, name: str, path: Path) -> LineDict | None:
        text = self._text(name, path)
        if text is None:
            return None
        try:
            data = load_yaml(text)
        except YamlError as exc:
            self._problem("unreadable", name, path, exc.message, exc.line)
            return None
        if not isinstance(data, dict):
            self._problem("unreadable", name, path, "expected a YAML mapping at the top level", 1)
            return None
        return data

    # --- the inputs -----------------------------------------------------------------------

    @cached_property
    def unit(self) -> UnitFile | None:
        unit = read_unit(self.inputs.unit)
        for path, why in unit.unreadable:
            kind = "missing" if why in ("file not found", "no unit file or drop-ins found here") \
                else "unreadable"
            self._problem(kind, "unit", path, why)
        return unit if unit.files else None

    @cached_property
    def env(self) -> EnvFile | None:
        text = self._text("env-file", self.inputs.env_file)
        return None if text is None else parse_env_file(text)

    @cached_property
    def key_text(self) -> str | None:
        return self._text("key-file", self.inputs.key_file)

    @cached_property
    def upstream_key_text(self) -> str | None:
        return self._text("upstream-key-file", self.inputs.upstream_key_file)

    def is_missing(self, name: str) -> bool:
        """Was input `name` (as in LoadProblem.input) found missing when it was read?"""
        return any(p.kind == "missing" and p.input == name for p in self.load_problems)

    @cached_property
    def provider_config(self) -> LineDict | None:
        return self._yaml_mapping("proxy-config", self.inputs.proxy_config)

    @cached_property
    def litellm_config(self) -> LineDict | None:
        if self.inputs.litellm_config is None:
            return None
        return self._yaml_mapping("litellm-config", self.inputs.litellm_config)

    @cached_property
    def runtime(self) -> Runtime | None:
        venv = self.inputs.venv
        if venv is None:
            return None
        if not venv.is_dir():
            self._problem("missing", "venv", venv, "runtime directory not found")
            return None
        manifest_path = venv / "optillm-proxy-runtime.json"
        try:
            manifest = read_manifest(manifest_path)
        except Unreadable as exc:
            manifest = None
            self._problem("missing" if str(exc) == "file not found" else "unreadable",
                          "venv", manifest_path, f"runtime manifest: {exc}")
        dists, problems = installed_dists(venv)
        for path, why in problems:
            self._problem("unreadable", "venv", path, why)
        plugins_path = venv / "libexec" / "plugins.json"
        plugins, pythons = None, {}
        if plugins_path.exists():
            text = self._text("venv", plugins_path)
            try:
                table = json.loads(text) if text is not None else None
                plugins = table.get("plugins") if isinstance(table, dict) else None
                pythons = table.get("pythons") if isinstance(table, dict) and isinstance(table.get("pythons"), dict) else {}
                if not isinstance(plugins, dict):
                    raise ValueError("no \"plugins\" object")
            except ValueError as exc:
                plugins = None
                if text is not None:
                    self._problem("unreadable", "venv", plugins_path, f"invalid plugin table: {exc}")
        return Runtime(venv, manifest_path, manifest, dists, plugins_path, plugins, pythons)

    # --- derived facts rules share --------------------------------------------------------

    @cached_property
    def exec_start(self) -> ExecStart | None:
        """The ExecStart= in force, if there is exactly one."""
        if self.unit is None:
            return None
        found = self.unit.effective("Service", "ExecStart")
        if len(found) != 1:
            return None
        return ExecStart(found[0], parse_exec_start(found[0].value))

    @property
    def proxy_port(self) -> int:
        es = self.exec_start
        if es is None:
            return LISTEN_PORT
        try:
            return int(es.command.flags.get("--port") or DEFAULT_PORT)
        except ValueError:
            return LISTEN_PORT

    @property
    def proxy_host(self) -> str:
        es = self.exec_start
        return (es.command.flags.get("--host") if es else None) or LISTEN_HOST

    @property
    def upstream_url(self) -> str:
        es = self.exec_start
        return (es.command.flags.get("--base-url") if es else None) or UPSTREAM_URL

    @property
    def plugin_slugs(self) -> tuple[str, ...]:
        rt = self.runtime
        if rt is not None and rt.plugins:
            return tuple(rt.plugins)
        return PLUGIN_SLUGS

    @property
    def service_environment(self) -> dict[str, str]:
        """What the service sees from the env file (the unit's Environment= is read apart)."""
        return self.env.as_dict() if self.env is not None else {}

    def plugin_setting(self) -> tuple[str, str, int] | None:
        """(value, path, line) of the plugin setting in force: the launcher's --plugins on
        ExecStart, else PROXY_PLUGINS in the env file (default none); None without env file."""
        es = self.exec_start
        if es is not None and es.command.launcher_plugins is not None:
            return es.command.launcher_plugins, es.directive.path, es.directive.line
        if self.env is None:
            return None
        a = self.env.get("PROXY_PLUGINS")
        return (a.value, str(self.inputs.env_file), a.line) if a else \
            ("none", str(self.inputs.env_file), 0)

    def enabled_plugins(self) -> tuple[str, set[str]] | None:
        """(raw setting, enabled slugs or {'*'} for all) as the launcher reads it."""
        setting = self.plugin_setting()
        if setting is None:
            return None
        raw = setting[0]
        text = raw.strip().lower()
        if text in ("", "none"):
            return raw, set()
        if text == "all":
            return raw, {"*"}
        return raw, {s.strip() for s in text.split(",") if s.strip()}
