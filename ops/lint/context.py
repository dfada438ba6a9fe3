"""The inputs of one lint run, each read at most once and only when a rule asks for it.

A file that cannot be read or parsed is recorded as a load problem (reported by the
file-missing / file-unreadable rules) and its parsed value is None, so rules about its
content simply have nothing to say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping

from ops.from_launcher import manifest, settings

from ops.from_launcher.layout import DEFAULT, LISTEN_HOST, LISTEN_PORT, UPSTREAM_URL, Layout
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
    socket: Path | None = None  # the socket unit; checked when given or installed

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
            socket=given.get("socket") or (layout.socket_file if layout.socket_file.exists() else None),
        )


@dataclass(frozen=True)
class LoadProblem:
    kind: str  # "missing" or "unreadable"
    input: str  # which input: unit, socket, env-file, key-file, upstream-key-file, proxy-config, litellm-config, venv
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
    # What the launcher in this runtime refuses about the runtime itself (its plugin table, its
    # manifest's profile), in its own words; None when it accepts them.
    plugins_refused: str | None = None
    profile_refused: str | None = None
    pythons: dict = field(default_factory=dict)  # the table's X.Y -> {"profiles", "full_unavailable"}

    @property
    def profile(self) -> str | None:
        """The profile the launcher uses (settings.runtime_profile): None when it refuses."""
        if self.profile_refused is not None:
            return None
        try:
            return settings.runtime_profile(self.manifest_path)
        except settings.ConfigRefused:
            return None

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

    def _read_unit(self, path: Path, what: str) -> UnitFile | None:
        unit = read_unit(path)
        for problem_path, why in unit.unreadable:
            kind = "missing" if why in ("file not found", "no unit file or drop-ins found here") \
                else "unreadable"
            self._problem(kind, what, problem_path, why)
        return unit if unit.files else None

    @cached_property
    def unit(self) -> UnitFile | None:
        return self._read_unit(self.inputs.unit, "unit")

    @cached_property
    def socket_unit(self) -> UnitFile | None:
        if self.inputs.socket is None:
            return None
        return self._read_unit(self.inputs.socket, "socket")

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
        manifest_path = manifest.path_of(venv)
        try:
            data = read_manifest(manifest_path)
        except Unreadable as exc:
            data = None
            if str(exc) == "file not found":  # unreadable: the launcher refuses it (profile_refused)
                self._problem("missing", "venv", manifest_path, f"runtime manifest: {exc}")
        dists, problems = installed_dists(venv)
        for path, why in problems:
            self._problem("unreadable", "venv", path, why)
        # Read by the launcher's own functions: what they refuse is what it refuses.
        plugins_path = venv / "libexec" / settings.PLUGIN_TABLE.name
        plugins = plugins_refused = profile_refused = None
        try:
            plugins = settings.plugin_table(plugins_path)
        except settings.ConfigRefused as exc:
            plugins_refused = str(exc)
        try:
            settings.runtime_profile(manifest_path)
        except settings.ConfigRefused as exc:
            profile_refused = str(exc)
        try:
            pythons = settings.plugin_pythons(plugins_path)
        except settings.ConfigRefused:
            pythons = {}  # plugins_refused already says why
        return Runtime(venv, manifest_path, data, dists, plugins_path, plugins, plugins_refused,
                       profile_refused, pythons)

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
        """The port optillm serves, as the launcher reads ExecStart (optillm's default when absent)."""
        es = self.exec_start
        if es is None:
            return LISTEN_PORT
        try:
            return settings.listen_address(es.command.args)[1]
        except settings.ConfigRefused:
            return LISTEN_PORT

    @property
    def proxy_host(self) -> str:
        es = self.exec_start
        return (es.command.flags.get("--host") if es else None) or LISTEN_HOST

    @property
    def upstream_url(self) -> str:
        es = self.exec_start
        return (es.command.flags.get("--base-url") if es else None) or UPSTREAM_URL

    @cached_property
    def plugin_table(self) -> dict[str, dict]:
        """The runtime's plugin table when it has one the launcher accepts, else opsctl's own
        (ops.from_launcher.plugins): the one list of plugin slugs."""
        rt = self.runtime
        if rt is not None and rt.plugins:
            return rt.plugins
        from ops.from_launcher.plugins import table

        return table()

    @property
    def plugin_slugs(self) -> tuple[str, ...]:
        return tuple(self.plugin_table)

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

    def plugins_refused(self) -> str | None:
        """The launcher's refusal of the plugin setting (settings.parse_plugin_setting), if any."""
        setting = self.plugin_setting()
        if setting is None:
            return None
        try:
            settings.parse_plugin_setting(setting[0], self.plugin_table)
        except settings.ConfigRefused as exc:
            return str(exc)
        return None

    def enabled_plugins(self) -> tuple[str, set[str]] | None:
        """(raw setting, enabled slugs or {'*'} for all), parsed by the launcher's own parser;
        None without a setting, or when the launcher refuses it (proxy-plugins-unknown says so)."""
        setting = self.plugin_setting()
        if setting is None:
            return None
        raw = setting[0]
        try:
            enabled = settings.parse_plugin_setting(raw, self.plugin_table)
        except settings.ConfigRefused:
            return None
        return raw, {"*"} if enabled == "all" else set(enabled)
