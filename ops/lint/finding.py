"""A finding: one line of lint output, `PATH:LINE: RULE severity: message`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    rule: str
    severity: str
    message: str

    def render(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} {self.severity}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    """What a rule yields; the engine adds the rule's ID and severity."""

    path: str
    line: int
    message: str
