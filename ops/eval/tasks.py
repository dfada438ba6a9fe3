"""`opsctl eval` task files and scorers (stdlib only).

A task file is JSON lines, one task per line:

    {"id": "apples-1", "prompt": "...", "answer": 12, "scorer": "numeric", "tolerance": 0.01}

- `id`: string or integer, unique in the file (results are kept per id, so a re-run resumes).
- `prompt`: the user message sent as is.
- `answer`: a number or a string; what it means depends on the scorer.
- `scorer` (optional): `numeric` when the answer is a number (or a string that is one), else `exact`.
  - `numeric`: the last number in the reply (1,234 / -3 / 2.5 / 3/4 / 25%) equals the answer, within
    `tolerance` (absolute, optional; default: equal up to float rounding).
  - `exact`: the reply's final answer (the last `\\boxed{...}`, else what follows the last "answer is"
    or "answer:", else the last non-empty line), or the whole reply, equals the answer, ignoring case,
    surrounding whitespace, quotes, markdown emphasis and trailing punctuation.
  - `regex`: the answer is a Python regular expression searched in the reply (`(?i)` for any case).
  - `choice`: the answer is one option letter (A-Z); the reply's final answer must start with it
    (`B`, `(B)`, `B) 12 apples`, `The answer is B.`).
- `tolerance` (optional, numeric only): a number >= 0.

Reasoning blocks (`<think>...</think>`) are removed from a reply before it is scored. Blank lines
are skipped; any other line that is not such an object is reported with its line number.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

SCORERS = ("exact", "numeric", "regex", "choice")
KEYS = ("id", "prompt", "answer", "scorer", "tolerance")
MAX_PROMPT_CHARS = 100_000


class TaskFileProblem(Exception):
    """The task file cannot be read, or has bad lines: exit 3, nothing was sent."""

    def __init__(self, message: str, bad_lines: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.bad_lines = bad_lines or []


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    answer: str | float | int
    scorer: str
    tolerance: float | None = None
    line: int = 0

    @property
    def fingerprint(self) -> str:
        """Changes when what the task asks or accepts changes: results of an older version are not reused."""
        text = json.dumps([self.prompt, self.answer, self.scorer, self.tolerance], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def score(self, reply: str) -> bool:
        return score(self, reply)


# ---------------------------------------------------------------------------------------------
# Parsing


def as_number(value) -> float | None:
    """A JSON number, or a string that is exactly one (commas as thousands separators allowed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text):
            return float(text)
    return None


def parse_line(obj, line: int) -> Task:
    """One decoded line as a Task; ValueError with the reason when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object (got {type(obj).__name__})")
    unknown = sorted(k for k in obj if k not in KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}; a task has {', '.join(KEYS)}")
    for key in ("id", "prompt", "answer"):
        if key not in obj:
            raise ValueError(f"no {key!r}")
    task_id = obj["id"]
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or not str(task_id).strip():
        raise ValueError("'id' must be a non-empty string or an integer")
    prompt = obj["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters")
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError("'answer' must be a string or a number")
    if isinstance(answer, str) and not answer.strip():
        raise ValueError("'answer' is empty")
    scorer = obj.get("scorer")
    if scorer is None:
        scorer = "numeric" if as_number(answer) is not None else "exact"
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}")
    tolerance = obj.get("tolerance")
    if tolerance is not None:
        if scorer != "numeric":
            raise ValueError("'tolerance' applies to the numeric scorer only")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
            raise ValueError("'tolerance' must be a number >= 0")
        tolerance = float(tolerance)
    if scorer == "numeric" and as_number(answer) is None:
        raise ValueError(f"scorer numeric needs a number as 'answer' (got {answer!r})")
    if scorer == "regex":
        if not isinstance(answer, str):
            raise ValueError("scorer regex needs the pattern as a string 'answer'")
        try:
            re.compile(answer)
        except re.error as exc:
            raise ValueError(f"'answer' is not a valid regular expression: {exc}") from None
    if scorer == "choice" and not (isinstance(answer, str) and re.fullmatch(r"\s*[A-Za-z]\s*", answer)):
        raise ValueError(f"scorer choice needs one option letter as 'answer' (got {answer!r})")
    return Task(id=str(task_id).strip(), prompt=prompt, answer=answer, scorer=scorer, tolerance=tolerance,
                line=line)


def parse_text(text: str) -> tuple[list[Task], list[tuple[int, str]]]:
    """The tasks of a file's text, and its bad lines as (line number, reason)."""
    tasks: list[Task] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            bad.append((number, f"not valid JSON: {exc}"))
            continue
        try:
            task = parse_line(obj, number)
        except ValueError as exc:
            bad.append((number, str(exc)))
            continue
        if task.id in seen:
            bad.append((number, f"duplicate id {task.id!r} (first on line {seen[task.id]})"))
            continue
        seen[task.id] = number
        tasks.append(task)
    return tasks, bad


def load(path: str, skip_bad_lines: bool = False) -> tuple[list[Task], list[tuple[int, str]], str]:
    """The tasks of FILE, the bad lines skipped, and the file's sha256.

    Bad lines raise TaskFileProblem unless skip_bad_lines; no task at all always does.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TaskFileProblem(f"cannot read --tasks {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileProblem(f"--tasks {path} is not UTF-8 text (byte {exc.start})") from None
    tasks, bad = parse_text(text)
    if bad and not skip_bad_lines:
        shown = "; ".join(f"line {n}: {why}" for n, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise TaskFileProblem(f"{path}: {len(bad)} malformed line(s), nothing sent: {shown}{more}; "
                              "fix them or pass --skip-bad-lines", bad)
    if not tasks:
        raise TaskFileProblem(f"{path}: no task in the file (JSON lines with id, prompt, answer)", bad)
    return tasks, bad, hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Scoring

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
# An option letter alone or marked as one: "B", "(B)", "B) 12", "B.", "**B**", "Option B"; not "A train".
_CHOICE = re.compile(r"[\s*_`]*(?:option\s+)?[(\[]?([A-Za-z])(?:[).:\]*_`]|\s*$)", re.IGNORECASE)
_CHOICE_MARKED = re.compile(r"\(([A-Za-z])\)")
_EDGE = " \t\r\n\"'`*_.,;:!?()[]{}"


def visible(reply: str) -> str:
    """The reply without reasoning blocks."""
    return _THINK.sub("", reply or "")


def final_answer(reply: str) -> str:
    """The last \\boxed{...}, else what follows the last "answer is"/"answer:", else the last line."""
    text = visible(reply).strip()
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    found = list(_ANSWER_IS.finditer(text))
    if found:
        return found[-1].group(1).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def normalize(text: str) -> str:
    return " ".join(str(text).lower().split()).strip(_EDGE)


def last_number(reply: str) -> float | None:
    found = _NUMBER.findall(visible(reply))
    if not found:
        return None
    text = found[-1].replace(",", "").replace("\u2212", "-")
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den) if float(den) else None
    return float(text)


def score(task: Task, reply: str) -> bool:
    if task.scorer == "numeric":
        got = last_number(reply)
        want = as_number(task.answer)
        if got is None or want is None:
            return False
        tolerance = task.tolerance if task.tolerance is not None else 1e-9 * max(1.0, abs(want))
        return abs(got - want) <= tolerance
    if task.scorer == "regex":
        return re.search(str(task.answer), visible(reply)) is not None
    if task.scorer == "choice":
        want = str(task.answer).strip().upper()
        final = final_answer(reply)
        for candidate in (final, visible(reply).strip()):
            match = _CHOICE.match(candidate)
            if match:
                return match.group(1).upper() == want
        marked = _CHOICE_MARKED.findall(final)
        return bool(marked) and marked[-1].upper() == want
    want = normalize(task.answer)
    return normalize(final_answer(reply)) == want or normalize(visible(reply)) == want
