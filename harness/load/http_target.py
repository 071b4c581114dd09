"""The scoring service over HTTP, as a `send(i)` for the load runners: POSTs pre-encoded body i (modulo their
number) to `/v1/score` on one keep-alive `aiohttp.ClientSession`, reads the whole answer, and raises a
`SendError` whose kind is what the results count: the HTTP status ("500", "503", ...), "timeout", "connection",
"payload" (a broken answer), or "bad-answer" (with `check=True`: not one score per event).

Connections are capped at `connections` (size it to the runner's in-flight cap: the open loop's
`max_in_flight` or the closed loop's clients), so requests never queue unseen inside the client pool.
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit

from harness.load.errors import SendError

SCORE_PATH = "/v1/score"


def score_url(url: str) -> str:
    """`url` itself, or its `/v1/score` when it names only the service (`http://host:8000` or `.../`)."""
    return url.rstrip("/") + SCORE_PATH if urlsplit(url).path in ("", "/") else url


class HttpTarget:
    """`async with HttpTarget(url, bodies) as target: await target.send(i)`."""

    def __init__(self, url: str, bodies: Sequence[tuple[bytes, str]], timeout_s: float = 10.0, *,
                 connections: int = 1024, check: bool = False, events: Sequence[int] | None = None):
        if not bodies:
            raise ValueError("need at least one request body")
        self.url = score_url(url)
        self.bodies = list(bodies)
        self.timeout_s = timeout_s
        self.connections = connections
        self.check = check
        self.events = list(events if events is not None else getattr(bodies, "events", None) or [])
        if check and not self.events:
            self.events = [_count_events(body, kind) for body, kind in self.bodies]
        self._session = None

    async def __aenter__(self) -> "HttpTarget":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0, keepalive_timeout=60.0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, i: int) -> None:
        import aiohttp

        if self._session is None:
            raise RuntimeError("HttpTarget.send outside `async with`")
        k = i % len(self.bodies)
        body, content_type = self.bodies[k]
        try:
            async with self._session.post(self.url, data=body, headers={"Content-Type": content_type}) as response:
                answer = await response.read()
                if response.status != 200:
                    raise SendError(str(response.status), answer[:200].decode("utf-8", "replace"))
                answer_type = response.headers.get("Content-Type", "")
        except TimeoutError:
            raise SendError("timeout", f"no answer within {self.timeout_s} s") from None
        except aiohttp.ClientPayloadError as exc:
            raise SendError("payload", str(exc)) from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise SendError("connection", str(exc) or type(exc).__name__) from None
        if self.check:
            self._check(answer, answer_type, self.events[k % len(self.events)])

    @staticmethod
    def _check(answer: bytes, content_type: str, events: int) -> None:
        from harness.api import decode_scores

        try:
            scores = decode_scores(answer, content_type)
        except Exception as exc:  # noqa: BLE001 - an undecodable answer is a bad answer, whatever the parser says
            raise SendError("bad-answer", f"undecodable answer ({type(exc).__name__})") from None
        if len(scores) != events:
            raise SendError("bad-answer", f"{len(scores)} scores for {events} events")


def _count_events(body: bytes, content_type: str) -> int:
    from harness.api import decode

    return len(decode(body, content_type))
