"""How a failed request is named in the results: one short kind per failure (an HTTP status such as "500",
"timeout", "connection", ...), so a run's errors can be counted by cause without keeping the exceptions."""

from __future__ import annotations

import asyncio


class SendError(Exception):
    """A request that failed for a reason the sender already classified; `kind` is what the results count."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.kind = kind


def error_kind(exc: BaseException) -> str:
    """The kind of a failure raised by any `send`: its own `kind`, "timeout", "connection", else the type name."""
    if isinstance(exc, SendError):
        return exc.kind
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    return type(exc).__name__
