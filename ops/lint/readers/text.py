"""Reading a file as text without ever raising: the failure becomes a message."""

from __future__ import annotations

from pathlib import Path


class Unreadable(Exception):
    """The file could not be read; str() says why and how to fix it."""


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Unreadable("file not found") from None
    except PermissionError:
        raise Unreadable("permission denied (run lint as root: sudo opsctl lint)") from None
    except IsADirectoryError:
        raise Unreadable("is a directory, expected a file") from None
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
