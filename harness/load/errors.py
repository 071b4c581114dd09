"""How a failed request is named in the results: one short kind per failure (an HTTP status such as "500",
"timeout", "connection", "bad_response", ...), so a run's errors can be counted by cause without keeping the
exceptions. A shed request (HTTP 503 with Retry-After: the service refusing load it cannot carry, by design) is
no error: its kind is "shed", and the recorder counts it apart."""

from __future__ import annotations

import asyncio

SHED = "shed"
BAD_RESPONSE = "bad_response"  # a 200 that is not one finite score per event of its request


class SendError(Exception):
    """A request that failed for a reason the sender already classified; `kind` is what the results count.
    `answered`: the service did answer (with a status), so the answer's latency counts among all answers'."""

    def __init__(self, kind: str, message: str = "", answered: bool = False):
        super().__init__(message or kind)
        self.kind = kind
        self.answered = answered


class Shed(SendError):
    """HTTP 503 with Retry-After: the service shed the request (overload). A 503 without it is a failure."""

    def __init__(self, message: str = ""):
        super().__init__(SHED, message, answered=True)


def error_kind(exc: BaseException) -> str:
    """The kind of a failure raised by any `send`: its own `kind`, "timeout", "connection", else the type name."""
    if isinstance(exc, SendError):
        return exc.kind
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    return type(exc).__name__


def answered(exc: BaseException) -> bool:
    """Whether a failed request was answered by the service (a status came back) rather than lost."""
    return bool(getattr(exc, "answered", False))


def describe(exc: BaseException) -> str:
    """One line for a person: "HTTP 503: <the answer's first words>", "HTTP 503 (shed): ...", "timeout: ..."."""
    kind = error_kind(exc)
    text = " ".join(str(exc).split())
    if isinstance(exc, Shed):
        return f"HTTP 503 (shed, Retry-After): {text}"
    if kind.isdigit():
        return f"HTTP {kind}: {text}"
    return text if text == kind else f"{kind}: {text}"
