"""systemd EnvironmentFile= syntax, read the way systemd reads it.

The state machine follows systemd's parse_env_file_internal (src/basic/env-file.c) so that
lint sees the same keys and values the service will. On top of it, it notes what systemd
silently drops or misreads (an operator expects shell or dotenv semantics, systemd has neither):
lines without `=`, invalid names, `# comments` after a value, text after a closing quote,
quotes left open across lines, keys set twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_COMMENTS = "#;"
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_SHELL_NEED_ESCAPE = '"\\`$'


@dataclass
class Assignment:
    key: str
    value: str
    line: int


@dataclass
class EnvFile:
    assignments: list[Assignment] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)

    def get(self, key: str) -> Assignment | None:
        """The assignment systemd applies for `key` (the last valid one)."""
        found = None
        for a in self.assignments:
            if a.key == key:
                found = a
        return found

    def as_dict(self) -> dict[str, str]:
        return {a.key: a.value for a in self.assignments}


def parse_env_file(text: str) -> EnvFile:
    result = EnvFile()
    raw: list[tuple[str, str, int, set[str]]] = []  # key, value, line, quirks seen
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] = []
    key_ws = value_ws = None  # index where trailing whitespace starts
    line = 1
    key_line = 1
    quirks: set[str] = set()

    def push() -> None:
        nonlocal key, value, quirks
        k = "".join(key[:key_ws] if key_ws is not None else key)
        raw.append((k, "".join(value), key_line, quirks))
        key, value, quirks = [], [], set()

    for c in text:
        if state == "PRE_KEY":
            if c in _COMMENTS:
                state = "COMMENT"
            elif c not in _WHITESPACE:
                state, key, key_ws, key_line = "KEY", [c], None, line
        elif state == "KEY":
            if c in _NEWLINE:
                result.problems.append(
                    (key_line, f"line has no '=': systemd ignores {''.join(key).strip()!r}; "
                               "write NAME=value"))
                state, key = "PRE_KEY", []
            elif c == "=":
                state, value, value_ws = "PRE_VALUE", [], None
            else:
                if c not in _WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if c in _NEWLINE:
                push()
                state = "PRE_KEY"
            elif c == "'":
                state = "SQ"
            elif c == '"':
                state = "DQ"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in _WHITESPACE:
                if value:
                    quirks.add("after-quote")
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c in _NEWLINE:
                if value_ws is not None:
                    value = value[:value_ws]
                push()
                state = "PRE_KEY"
            elif c == "\\":
                state, value_ws = "VALUE_ESCAPE", None
            else:
                if c not in _WHITESPACE:
                    if c == "#" and value_ws is not None:
                        quirks.add("inline-comment")
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in _NEWLINE:
                value.append(c)
        elif state == "SQ":
            if c == "'":
                state = "PRE_VALUE"
            else:
                if c in _NEWLINE:
                    quirks.add("open-quote")
                value.append(c)
        elif state == "DQ":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DQ_ESCAPE"
            else:
                if c in _NEWLINE:
                    quirks.add("open-quote")
                value.append(c)
        elif state == "DQ_ESCAPE":
            state = "DQ"
            if c in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value.extend(("\\", c))
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in _NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in _NEWLINE else "COMMENT"
        if c == "\n":
            line += 1

    if state in ("SQ", "DQ", "DQ_ESCAPE"):
        quirks.add("unterminated")
    if state == "KEY":
        result.problems.append(
            (key_line, f"line has no '=': systemd ignores {''.join(key).strip()!r}; write NAME=value"))
    elif state != "PRE_KEY" and state not in ("COMMENT", "COMMENT_ESCAPE"):
        if state == "VALUE" and value_ws is not None:
            value = value[:value_ws]
        push()

    seen: dict[str, int] = {}
    for k, v, ln, q in raw:
        if not _NAME.match(k):
            hint = " (drop 'export ': systemd is not a shell)" if k.startswith("export") else ""
            result.problems.append(
                (ln, f"invalid variable name {k!r}: systemd ignores this assignment{hint}"))
            continue
        if "unterminated" in q:
            result.problems.append((ln, f"{k}: quote never closed; systemd swallows the rest of "
                                        "the file into this value; close the quote"))
        elif "open-quote" in q:
            result.problems.append((ln, f"{k}: quoted value spans lines; close the quote on "
                                        "this line"))
        if "after-quote" in q:
            result.problems.append((ln, f"{k}: text after the closing quote is glued onto the "
                                        "value; systemd has no inline comments, remove it"))
        if "inline-comment" in q:
            result.problems.append((ln, f"{k}: '#' after the value is part of the value "
                                        "(systemd has no inline comments); move the comment to "
                                        "its own line"))
        if k in seen:
            result.problems.append((ln, f"{k} is set twice (also line {seen[k]}); systemd keeps "
                                        "the last one; remove one"))
        seen[k] = ln
        result.assignments.append(Assignment(k, v, ln))
    result.problems.sort()
    return result
