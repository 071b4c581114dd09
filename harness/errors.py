"""The one exception type that means "the user's input is wrong" (exit status 2, one line, no traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def kind_of(value: object) -> str:
    """What a value is, in words, for "expected X, got Y" messages."""
    names = {list: "a list", dict: "an object", str: "a string", type(None): "nothing", int: "an integer",
             float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def field_error(exc: "ValidationError") -> tuple[str, str]:
    """(field path like `load.rates[0]`, message) of a pydantic error's first problem, worded for one line."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"].endswith("_type"):
        msg = f"{msg}, got {kind_of(err['input'])}"
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out, msg


class RunStopped(Exception):
    """The run could not go on for a reason outside its input (the results disk full, the Ray cluster's head
    gone): one line naming the cause and what to do (exit 1, no traceback); every task finished before it is kept
    in the run folder, and `--resume` finishes the run."""
