"""Rules an operator accepts: `opsctl lint --ignore RULE` and the `ignored:` list of a lint config
file (hadolint's model), /etc/optillm-proxy/lint.yaml by default:

    # Rules this host accepts; `opsctl lint --explain RULE` says what each one guards.
    ignored:
      - approach-fixed

A rule can be ignored unless every finding it makes is a start the launcher (or systemd) refuses:
ignoring those in lint would not make the service start. And a finding that says the launcher
refuses to start is reported even when its rule is ignored.
"""

from __future__ import annotations

from pathlib import Path

from ops.lint.finding import Finding
from ops.lint.rules import RULES
from ops.lint.rules._launcher import REFUSES

# Prefixes of the findings that report a refused start (the launcher's exit 78, or systemd's).
REFUSED_START = (REFUSES, "the service will not start: ")


class IgnoreProblem(Exception):
    """A bad --ignore or lint config; str() is the one line for the operator (exit 2)."""


def default_path() -> Path:
    from ops.from_launcher.layout import DEFAULT

    return DEFAULT.conf_dir / "lint.yaml"


def not_ignorable() -> set[str]:
    return {r.ID for r in RULES if getattr(r, "REFUSES_START", False)}


def check_rule(rule_id: str, where: str) -> None:
    ids = {r.ID for r in RULES}
    if rule_id not in ids:
        raise IgnoreProblem(f"{where}: no rule {rule_id!r}; `opsctl lint --list-rules` lists them")
    if rule_id in not_ignorable():
        raise IgnoreProblem(
            f"{where}: {rule_id} cannot be ignored: the launcher refuses to start on what it reports, so "
            f"ignoring it would not make the service start; fix it (opsctl lint --explain {rule_id})")


def read_config(path: Path) -> list[str]:
    """The `ignored:` list of a lint config file, each name checked."""
    from ops.lint.readers.text import Unreadable, read_text
    from ops.lint.readers.yamlfile import YamlError, load_yaml

    try:
        data = load_yaml(read_text(path))
    except Unreadable as exc:
        raise IgnoreProblem(f"lint config {path}: {exc}") from None
    except YamlError as exc:
        raise IgnoreProblem(f"lint config {path}:{exc.line}: {exc.message}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"ignored"}:
        raise IgnoreProblem(f"lint config {path}: expected only `ignored:`, a list of rule IDs")
    ignored = data.get("ignored") or []
    if not isinstance(ignored, list) or not all(isinstance(i, str) for i in ignored):
        raise IgnoreProblem(f"lint config {path}: `ignored:` must be a list of rule IDs")
    for index, rule_id in enumerate(ignored):
        check_rule(rule_id, f"lint config {path}:{ignored.line_of(index)}")
    return list(ignored)


def resolve(cli_ignores: tuple[str, ...], config: Path | None) -> tuple[set[str], str | None]:
    """(rule IDs to ignore, the config file read or None). An explicit --config must exist; the
    default one is read when present."""
    for rule_id in cli_ignores:
        check_rule(rule_id, f"--ignore {rule_id}")
    path = config if config is not None else default_path()
    if config is None and not path.exists():
        return set(cli_ignores), None
    return set(cli_ignores) | set(read_config(path)), str(path)


def apply(findings: list[Finding], ignored: set[str]) -> tuple[list[Finding], int]:
    """(findings kept, number dropped): a refused start is kept whatever its rule."""
    kept = [f for f in findings if f.rule not in ignored or f.message.startswith(REFUSED_START)]
    return kept, len(findings) - len(kept)
