"""Every lint rule as Markdown, for the RUNBOOK's troubleshooting section:
`uv run python -m ops.lint.docs` (the text is the rules' own docstrings, so it cannot drift)."""

from __future__ import annotations

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


def markdown() -> str:
    parts = ["| rule | severity | what it means |", "|---|---|---|"]
    parts += [f"| `{r.ID}` | {r.SEVERITY} | {summary(r)} |" for r in RULES]
    for r in RULES:
        body = (r.__doc__ or "").strip().split("\n", 1)[1].strip()
        parts += ["", f"### `{r.ID}` ({r.SEVERITY})", "", summary(r), "", _fence_examples(body)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
