"""Every lint rule as Markdown, from the rules' own docstrings: table() is docs/reference/lint-rules.md's
troubleshooting table (written there by tools/gen_docs.py), markdown() every rule in full
(`uv run python -m ops.lint.docs`)."""

from __future__ import annotations

import re
from types import ModuleType

from ops.lint.engine import summary
from ops.lint.rules import RULES


def _fence_examples(text: str) -> str:
    """Docstring examples are indented by 4; Markdown needs fences after a `Fails:` line."""
    out: list[str] = []
    in_code = False
    for line in text.splitlines():
        indented = line.startswith("    ")
        if indented and not in_code:
            out.append("```")
            in_code = True
        elif not indented and in_code:
            out.append("```")
            in_code = False
        out.append(line[4:] if indented else line)
    if in_code:
        out.append("```")
    return "\n".join(out)


def fix(rule: ModuleType) -> str:
    """The docstring's closing `Fix:` paragraph, on one line ('' when a rule has none)."""
    match = re.search(r"^Fix:\s*(.*)\Z", (rule.__doc__ or "").strip(), re.S | re.M)
    return " ".join(match.group(1).split()) if match else ""


def table() -> str:
    """rule | severity | cause | fix, one row per rule in the order lint runs them."""
    rows = [f"| `{r.ID}` | {r.SEVERITY} | {summary(r)} | {fix(r)} |" for r in RULES]
    return "\n".join(["| rule | severity | cause | fix |", "|---|---|---|---|", *rows]) + "\n"


def markdown() -> str:
    parts = ["| rule | severity | what it means |", "|---|---|---|"]
    parts += [f"| `{r.ID}` | {r.SEVERITY} | {summary(r)} |" for r in RULES]
    for r in RULES:
        body = (r.__doc__ or "").strip().split("\n\n", 1)[1].strip()
        parts += ["", f"### `{r.ID}` ({r.SEVERITY})", "", summary(r), "", _fence_examples(body)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
