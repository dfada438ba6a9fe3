"""Keys and bearer tokens never reach the journal: every text the process writes is redacted.

What is removed: the proxy key (what clients present), the upstream key (what the proxy presents
to LiteLLM), any `Bearer <token>`, the value of any `Authorization: ...` / `"authorization": "..."`
dump or of a key named as one (`api_key=...`, `token: ...`, LiteLLM's 401 text `Received API Key =
..., Key Hash (Token) =...`, which quotes a key the proxy does not know when the model behind
LiteLLM refused LiteLLM's), and any `sk-...` looking key. The known keys are replaced wherever they appear, inside any
text, by a label naming which key it was (`[redacted upstream-key]`), so an operator still reads
which credential an upstream quoted; the patterns become `[redacted]`.

Where it sits, and why there: the journal's only source is the process's stdout and stderr (the
unit's StandardOutput=/StandardError=journal), and every Python-level writer reaches them through
the `sys.stdout`/`sys.stderr` objects: print(), logging's StreamHandlers (which keep the stream
object they were created with), warnings, sys.excepthook and threading.excepthook tracebacks.
install() replaces both objects with a RedactingStream BEFORE optillm is imported (0.3.12 calls
logging.basicConfig at import, so its handler captures our object; so do werkzeug's and any
plugin's made later). A logging filter would miss prints and tracebacks, and must be added to
every handler anyone creates; the stream sees them all, whatever formatted them.

What it cannot see: writes to file descriptors 1/2 that bypass the Python objects (faulthandler's
stack dumps, which carry file and function names only; C libraries; child processes plugins start,
which inherit the descriptors), and log files a plugin opens itself (0.3.12's mcp plugin writes
~/.optillm/logs/, not the journal). The request records (records.py) go to journald natively,
not through the stream: install() returns the Redactor and main wraps the record sender with
`redact_record`.

Lines are redacted whole: each thread's text is held until its newline (or a flush), so a key
that print() or a traceback writes in pieces is still seen whole, and lines of different threads
never interleave. A flush emits the partial line, redacted: a secret cut in two by an explicit
flush in the middle of a line is the one case seen in parts (print and logging flush after the
newline). Cost per line: one `in` test per known key (str.replace only on a hit), a few `in`
tests for the words the pattern needs, and only when one is there, one search with the pattern
compiled at import; nothing is built per request.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
import threading
from typing import Callable

REDACTED = "[redacted]"
# What a token is made of: everything up to whitespace, a quote or a delimiter. A known key holds
# no whitespace (settings.check_key_text refuses it), but may hold anything else: known keys are
# replaced literally first, so this class decides only what an unknown token's end is.
_TOKEN = r"""[^\s"'`,;<>(){}\[\]\\]+"""
# Scheme words before a token are kept and skipped: `Bearer Bearer <token>` too.
_SCHEME_WORDS = r"(?:bearer|basic|token|digest)"
_SCHEMES = rf"(?:{_SCHEME_WORDS}\s+){{0,3}}"  # bounded: a line of scheme words stays linear
# Where a secret is named: a header dump, or a key named as one (`api_key=`, LiteLLM's 401 text
# `Received API Key = ..., Key Hash (Token) =...`).
_NAMES = r"(?:authorization|api[ _-]?key|key hash \(token\)|token|secret|password)"
_NAMED = _NAMES + r"[\"']?\s*[:=]\s*[\"']?"
# The token itself is never a scheme word or the next name: `Bearer token: <x>` redacts <x>.
_SECRET = rf"(?!{_SCHEME_WORDS}\s|{_NAMED})" + _TOKEN
PATTERN = re.compile(
    r"(?P<keep>\b" + _NAMED + _SCHEMES + r"|\bbearer\s+" + _SCHEMES + r")" + _SECRET +
    r"|(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_\-]{8,}",  # an OpenAI-style key
    re.IGNORECASE)


# Every match of PATTERN holds one of these (ASCII text, lower-cased): a line holding none of them
# skips the pattern, which costs tens of microseconds per line, the test a few.
_TRIGGERS = ("bearer", "authorization", "key", "token", "secret", "password", "sk-")


def _replace(match: re.Match) -> str:
    return (match.group("keep") or "") + REDACTED


class Redactor:
    """Redacts the given keys (name -> key) and the patterns above from a text."""

    def __init__(self, keys: dict[str, str]) -> None:
        # Longest first: a key that contains another is replaced before its part could be.
        self.keys = tuple(sorted(((key, f"[redacted {name}]") for name, key in keys.items() if key),
                                 key=lambda pair: -len(pair[0])))

    def __call__(self, text: str) -> str:
        for key, label in self.keys:
            if key in text:
                text = text.replace(key, label)
        if text.isascii():
            lower = text.lower()
            if not any(trigger in lower for trigger in _TRIGGERS):
                return text
        return PATTERN.sub(_replace, text)


class RedactingStream(io.TextIOBase):
    """A text stream that writes redacted whole lines to `inner` (see the module docstring)."""

    def __init__(self, inner, redact: Callable[[str], str]) -> None:
        self.inner = inner
        self.redact = redact
        self._pending = threading.local()  # each thread's unfinished line
        self._lock = threading.Lock()  # whole lines, in order, from any thread

    # what callers read from a text stream
    @property
    def encoding(self):
        return getattr(self.inner, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self.inner, "errors", "strict")

    @property
    def line_buffering(self):
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()  # faulthandler writes stack dumps (no values) there

    # No `buffer` attribute: a writer that found one would write bytes around the redaction.

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        pending = getattr(self._pending, "text", "") + text
        cut = pending.rfind("\n") + 1
        self._pending.text = pending[cut:]
        if cut:
            self._emit(pending[:cut])
        return len(text)

    def flush(self) -> None:
        pending = getattr(self._pending, "text", "")
        self._pending.text = ""
        if pending:
            self._emit(pending)
        with self._lock:
            self.inner.flush()

    def _emit(self, text: str) -> None:
        text = self.redact(text)
        with self._lock:
            self.inner.write(text)


def install(keys: dict[str, str]) -> Redactor:
    """Replace sys.stdout and sys.stderr with redacting streams (call before importing optillm)."""
    redactor = Redactor(keys)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingStream):
            stream = stream.inner
        setattr(sys, name, RedactingStream(stream, redactor))
    return redactor


def redact_record(record, redactor: Callable[[str], str]):
    """The record with every text field redacted (a client chose model and path)."""
    changes = {f.name: redactor(value) for f in dataclasses.fields(record)
               if isinstance(value := getattr(record, f.name), str)}
    return dataclasses.replace(record, **changes)


def redacting_sender(send: Callable, redactor: Callable[[str], str]) -> Callable:
    """A record sender (records.make_sender) that sends the redacted record."""
    return lambda record: send(redact_record(record, redactor))
