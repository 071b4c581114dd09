"""The one exception type that means "the user's input is wrong" (exit status 2, one line, no traceback)."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad scenario, data, results or command-line input.

    The message is printed as one line, prefixed with the file (and field) it concerns.
    """

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        self.detail = message
        where = ": ".join(p for p in (self.path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
