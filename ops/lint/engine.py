"""Run every rule over a Context, and render what they found."""

from __future__ import annotations

import json
from types import ModuleType

from ops.lint.context import Context
from ops.lint.finding import ERROR, WARNING, Finding
from ops.lint.rules import RULES, lint_internal


def rule_by_id(rule_id: str) -> ModuleType | None:
    return next((r for r in RULES if r.ID == rule_id), None)


def summary(rule: ModuleType) -> str:
    """The docstring's first paragraph, on one line (it may wrap in the source)."""
    return " ".join((rule.__doc__ or "").strip().split("\n\n", 1)[0].split())


def explain(rule: ModuleType) -> str:
    note = ("\n\nNot ignorable (--ignore, lint.yaml): every finding of this rule is a start the launcher "
            "refuses." if getattr(rule, "REFUSES_START", False) else "")
    return f"{rule.ID} ({rule.SEVERITY})\n\n{(rule.__doc__ or '').strip()}{note}\n"


def _one_line(text: str) -> str:
    """Findings are one line each: names taken from input files may hold newlines or escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def run(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        try:
            for p in rule.check(ctx):
                findings.append(Finding(_one_line(p.path), p.line, rule.ID, rule.SEVERITY,
                                        _one_line(p.message)))
        except Exception as exc:  # noqa: BLE001 - a rule bug must not hide the other findings
            findings.append(Finding("<lint>", 0, lint_internal.ID, lint_internal.SEVERITY,
                                    f"rule {rule.ID} crashed ({type(exc).__name__}: {exc}); "
                                    "please report this bug"))
    # Stable and deduplicated: the same fact reached by two routes is said once.
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.rule, f.message))


def exit_code(findings: list[Finding], strict: bool) -> int:
    if any(f.severity == ERROR for f in findings):
        return 1
    if strict and any(f.severity == WARNING for f in findings):
        return 1
    return 0


def render_text(findings: list[Finding]) -> str:
    return "".join(f.render() + "\n" for f in findings)


def render_json(findings: list[Finding]) -> str:
    return json.dumps([f.as_dict() for f in findings], indent=2) + "\n"


def profile_line(ctx: Context) -> str:
    """The installed runtime and its profile, for stderr (stdout stays findings only)."""
    rt = ctx.runtime
    if rt is None:
        return "info: no runtime checked (none installed at the default path; use --venv PATH)"
    m = rt.manifest or {}
    return (f"info: runtime {rt.path} profile={m.get('profile', '?')} "
            f"optillm={m.get('optillm_version', '?')} lock_sha256={str(m.get('lock_sha256', '?'))[:12]}")
