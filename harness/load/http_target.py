"""The scoring service over HTTP, as a `send(i)` for the load runners: POSTs pre-encoded body i (modulo their
number) to `/v1/score` on one keep-alive `aiohttp.ClientSession`, reads the whole answer and checks it
(harness.load.response): a request counts as scored only when its 200 carries one finite score per event. Else
it raises a `SendError` whose kind is what the results count: "shed" (503 with Retry-After), the HTTP status
("500", "503", "401", ...), "bad_response", "timeout", "connection" or "payload" (an answer cut off).

`exchange` is the same request without the check, for the warm-up (harness.load.warmup). `headers` go with every
request: `auth_headers(token)` for a service that wants an API token.

Connections are capped at `connections` (size it to the runner's in-flight cap: the open loop's
`max_in_flight` or the closed loop's clients), so requests never queue unseen inside the client pool.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

from harness.load.errors import SendError
from harness.load.response import check_response

SCORE_PATH = "/v1/score"


def score_url(url: str) -> str:
    """`url` itself, or its `/v1/score` when it names only the service (`http://host:8000` or `.../`)."""
    return url.rstrip("/") + SCORE_PATH if urlsplit(url).path in ("", "/") else url


def auth_headers(token: str | None) -> dict[str, str]:
    """The headers that carry an API token (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class Exchange(NamedTuple):
    status: int
    body: bytes
    content_type: str
    retry_after: str | None


class HttpTarget:
    """`async with HttpTarget(url, bodies) as target: await target.send(i)` (or `await target.exchange(body, kind)`)."""

    def __init__(self, url: str, bodies: Sequence[tuple[bytes, str]] = (), timeout_s: float = 10.0, *,
                 connections: int = 1024, events: Sequence[int] | None = None,
                 headers: Mapping[str, str] | None = None):
        self.url = score_url(url)
        self.bodies = list(bodies)
        self.timeout_s = timeout_s
        self.connections = connections
        self.headers = dict(headers or {})
        self.events = list(events if events is not None else getattr(bodies, "events", None) or [])
        if len(self.events) != len(self.bodies):  # every answer is checked against its request's event count
            self.events = [_count_events(body, kind) for body, kind in self.bodies]
        self._session = None
        self._by_type: dict[str, dict[str, str]] = {}  # request headers per content type, built once

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
        """Request i, checked: returns when it was scored, raises (a `SendError`) otherwise."""
        if not self.bodies:
            raise RuntimeError("HttpTarget.send needs request bodies")
        k = i % len(self.bodies)
        answer = await self.exchange(*self.bodies[k])
        check_response(answer.status, answer.body, answer.content_type, self.events[k], answer.retry_after)

    async def exchange(self, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> Exchange:
        """(status, answer body, answer content type, Retry-After) of one request, unchecked; raises only when no
        answer came."""
        import aiohttp

        if self._session is None:
            raise RuntimeError("HttpTarget used outside `async with`")
        sent = self._by_type.get(content_type)
        if sent is None:
            sent = self._by_type[content_type] = {**self.headers, "Content-Type": content_type}
        if headers:
            sent = {**sent, **headers}
        try:
            async with self._session.post(self.url, data=body, headers=sent) as response:
                answer = await response.read()
                return Exchange(response.status, answer, response.headers.get("Content-Type", ""),
                                response.headers.get("Retry-After"))
        except TimeoutError:
            raise SendError("timeout", f"no answer within {self.timeout_s} s") from None
        except aiohttp.ClientPayloadError as exc:
            raise SendError("payload", str(exc)) from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise SendError("connection", str(exc) or type(exc).__name__) from None


def _count_events(body: bytes, content_type: str) -> int:
    from harness.serving.api import decode

    return len(decode(body, content_type))
