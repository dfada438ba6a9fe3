"""A WSGI response that runs a cleanup once the server is done with it.

The server calls ``close()`` on every response (PEP 3333), streamed or not, also when the client
went away mid-answer: the one place where "this request is over" is certain.
"""
from __future__ import annotations

from typing import Callable, Iterable


class Closing:
    """The app's response iterable, plus ``on_close`` run exactly once after the app's own close."""

    def __init__(self, result: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self):
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()
