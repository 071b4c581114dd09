"""Every answer checked: a request counts as scored only when its 200 carries exactly one finite score per event
it sent. Anything else raises a `SendError` whose kind the results count: `Shed` for a 503 with Retry-After,
the status for any other non-200, "bad_response" for a 200 that is not such an answer.

It runs inside the generator on every answer, so it stays cheap: msgpack scores are read in place
(`np.frombuffer`), JSON is parsed by orjson (figures in docs/load.md).
"""

from __future__ import annotations

import numpy as np

from harness.serving.api import Answer, decode_answer
from harness.load.errors import BAD_RESPONSE, SendError, Shed


def check_response(status: int, body: bytes, content_type: str | None, events: int,
                   retry_after: str | None = None) -> Answer:
    """The decoded answer of a good 200 to a request of `events` events; raises otherwise (see the docstring)."""
    if status == 200:
        return check_answer(body, content_type, events)
    text = body[:200].decode("utf-8", "replace")
    if status == 503 and retry_after is not None:
        raise Shed(text)
    raise SendError(str(status), text, answered=True)


def check_answer(body: bytes, content_type: str | None, events: int) -> Answer:
    """The answer in a 200's body, or SendError("bad_response")."""
    try:
        answer = decode_answer(body, content_type or "")
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the answer is unusable
        raise SendError(BAD_RESPONSE, f"undecodable answer ({type(exc).__name__})", answered=True) from None
    scores = answer.scores
    if len(scores) != events:
        raise SendError(BAD_RESPONSE, f"{len(scores)} scores for {events} events", answered=True)
    finite = np.isfinite(scores)
    if not finite.all():
        i = int(np.argmin(finite))
        raise SendError(BAD_RESPONSE, f"score {i} is {scores[i]}, not a finite number", answered=True)
    return answer
