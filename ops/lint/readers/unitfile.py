"""systemd unit files and their drop-ins, read as systemd's config parser reads them.

Directives keep the file and line they came from so findings point at the right place
(a drop-in overriding ExecStart is where the operator must look). List-valued settings
follow systemd's rule that an empty assignment (`ExecStart=`) resets what came before.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ops.from_launcher.layout import SERVICE
from ops.lint.readers.text import Unreadable, read_text


@dataclass(frozen=True)
class Directive:
    section: str
    key: str
    value: str
    path: str
    line: int


@dataclass
class UnitFile:
    files: list[str] = field(default_factory=list)
    directives: list[Directive] = field(default_factory=list)
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # syntax
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # path, why

    def effective(self, section: str, key: str) -> list[Directive]:
        """Assignments in force after drop-ins, an empty one resetting the list."""
        out: list[Directive] = []
        for d in self.directives:
            if d.section == section and d.key == key:
                if d.value == "":
                    out = []
                else:
                    out.append(d)
        return out

    def last(self, section: str, key: str) -> Directive | None:
        found = self.effective(section, key)
        return found[-1] if found else None


def parse_unit_text(text: str, path: str, unit: UnitFile) -> None:
    section = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].strip()
        i += 1
        # A trailing backslash continues the assignment; comment lines inside are skipped.
        while line.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith(("#", ";")):
                continue
            line = line[:-1] + " " + nxt
        if line.endswith("\\"):
            line = line[:-1]
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                unit.problems.append((path, start + 1, f"bad section header {line!r}; write [Name]"))
                section = None
                continue
            section = line[1:-1]
            continue
        if section is None:
            unit.problems.append(
                (path, start + 1, "assignment outside of any [Section]: systemd ignores it"))
            continue
        if "=" not in line:
            unit.problems.append(
                (path, start + 1, f"missing '=': systemd ignores {line[:40]!r}; write Key=value"))
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not key:
            unit.problems.append((path, start + 1, "empty setting name before '='"))
            continue
        unit.directives.append(Directive(section, key, value.strip(), path, start + 1))


def unit_sources(path: Path) -> tuple[Path | None, list[Path]]:
    """The unit file and its drop-ins for `path` (a unit file, a unit dir or a `.d` dir)."""
    if path.is_dir():
        if path.name.endswith(".d"):
            main = path.with_name(path.name[:-2])
            return (main if main.is_file() else None), sorted(path.glob("*.conf"))
        main = path / f"{SERVICE}.service"
        return main, sorted((path / f"{SERVICE}.service.d").glob("*.conf"))
    dropins = path.parent / (path.name + ".d")
    return path, sorted(dropins.glob("*.conf")) if dropins.is_dir() else []


def read_unit(path: Path) -> UnitFile:
    unit = UnitFile()
    try:
        main, dropins = unit_sources(path)
    except OSError as exc:
        unit.unreadable.append((str(path), f"cannot list: {exc.strerror or exc}"))
        return unit
    if main is None and not dropins:
        unit.unreadable.append((str(path), "no unit file or drop-ins found here"))
    for source in ([main] if main else []) + dropins:
        try:
            text = read_text(source)
        except Unreadable as exc:
            unit.unreadable.append((str(source), str(exc)))
            continue
        unit.files.append(str(source))
        parse_unit_text(text, str(source), unit)
    return unit


def split_words(value: str) -> list[str] | None:
    """systemd-style word splitting (quotes, backslashes); None when quoting is broken."""
    try:
        return shlex.split(value, comments=False, posix=True)
    except ValueError:
        return None


def environment_assignments(value: str) -> list[tuple[str, str]] | None:
    """`Environment="A=b c" D=e` as [(A, 'b c'), (D, 'e')]; None when quoting is broken."""
    words = split_words(value)
    if words is None:
        return None
    out = []
    for w in words:
        name, sep, val = w.partition("=")
        if sep:
            out.append((name, val))
    return out
