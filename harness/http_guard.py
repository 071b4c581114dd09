"""The scoring service's HTTP front door, as plain ASGI (no Ray): bodies are read whole, bounded in size and in
time, before any replica is involved, and every error is JSON.

Why in front. Ray Serve hands a request to a replica as soon as its headers arrive, and the replica then pulls
the body; a client that sends a large Content-Length and then a byte a second holds one of the replica's
`max_ongoing_requests` slots for as long as it likes, and a few dozen such clients lock everyone else out. A
chunked body has no Content-Length to refuse it by, so a limit must be enforced while it is read. `BodyGuard`
reads each body completely (at most `MAX_BODY_BYTES`, within `BODY_TIMEOUT_S` of the headers) in the process
that accepted the connection, and only then passes the request on: a trickling client costs a coroutine in the
proxy, never a replica slot.

Where it runs. Serve imports the function named by `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` in every proxy
(and in a direct-ingress replica's own HTTP server) and wraps its ASGI app in the middlewares it returns. A
private Ray started by the harness sets it (`harness.execution.runner.ray_environment`); on a cluster you start,
put `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=harness.http_guard:middlewares` in every node's environment
(clusters/ does). Without it the replica still enforces the same limits itself (`read_body`), but a slow body
then holds a replica slot until its deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from harness.api import BODY_TIMEOUT_S, JSON, MAX_BODY_BYTES, RequestError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IMPORT_PATH = "harness.http_guard:middlewares"


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it declares one (the HTTP parser has already refused malformed ones)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return int(value)
    return None


async def read_body(receive: Receive, declared: int | None, max_bytes: int = MAX_BODY_BYTES,
                    timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, or RequestError: 413 when it declares or reaches more than `max_bytes` (reading stops
    there: a chunked body is never held beyond the limit), 408 when it is not whole within `timeout_s`.
    ClientGone when the client left."""
    if declared is not None and declared > max_bytes:
        raise RequestError(f"body of {declared} bytes exceeds the limit of {max_bytes}", 413)

    async def read() -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise RequestError(f"body exceeds the limit of {max_bytes} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(f"the body did not arrive whole within {timeout_s:g} s of the request's headers", 408) from None


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


LINGER_BYTES = 8 << 20  # after refusing a body, this much more of it is read and dropped (at most LINGER_S)...
LINGER_S = 1.0  # ...so the client, still sending, reads the answer before the connection closes under it


async def send_error(send: Send, status: int, message: str, receive: Receive | None = None) -> None:
    """A JSON error answer. With `receive` (a body left unread), the connection closes after it: the answer is
    written whole first, then up to LINGER_BYTES of the body are drained (LINGER_S at most) before the answer
    ends, because closing a socket with unread data resets the connection and can take the answer with it."""
    body = error_body(message)
    head = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    if receive is not None:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    if receive is None:
        return await send({"type": "http.response.body", "body": body})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await _drain(receive)
    await send({"type": "http.response.body", "body": b""})


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of a refused body: until its end, the client leaving, LINGER_BYTES or LINGER_S."""
    async def drop() -> None:
        dropped = 0
        while dropped < LINGER_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))

    try:
        await asyncio.wait_for(drop(), LINGER_S)
    except asyncio.TimeoutError:
        pass


class BodyGuard:
    """ASGI middleware: read each HTTP request's body whole, bounded (see the module docstring), then pass the
    request on with the body replayed; answer Serve's own plain-text errors (no route, backpressure, timeout)
    as JSON too."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = MAX_BODY_BYTES,
                 timeout_s: float = BODY_TIMEOUT_S):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            body = await read_body(receive, declared_length(scope), self.max_bytes, self.timeout_s)
        except RequestError as exc:
            return await send_error(send, exc.status, exc.message, receive)
        except ClientGone:
            return None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then only the disconnect, if the client leaves

        await self.app(scope, replay, as_json_errors(send))


def as_json_errors(send: Send) -> Send:
    """`send`, turning an error answer that is not JSON (Serve's own: 404 no route, 503 backpressure, 408/500)
    into `{"error": <its text>}`, its other headers (Retry-After) kept."""
    held: Message | None = None
    parts: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400 and not _is_json(message):
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            return await send(message)
        parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        text = b"".join(parts).decode("utf-8", "replace").strip() or f"HTTP {held['status']}"
        body = error_body(text.splitlines()[0][:500])
        keep = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
        await send({**held, "headers": [*keep, (b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _is_json(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip() == JSON.encode() for k, v in start.get("headers", []))


def json_parse_errors() -> None:
    """Make uvicorn answer a request it cannot parse (`Content-Length: -1`, a broken request line) with a JSON
    error like every other answer, instead of its plain text. uvicorn writes that answer itself, before any ASGI
    app runs, so this replaces its `send_400_response` in the process that serves HTTP."""
    from uvicorn.protocols.http import h11_impl, httptools_impl

    def send_400_response(self, msg: str) -> None:
        body = error_body(f"the request is not valid HTTP/1.1 ({msg.rstrip('.')})")
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: " + JSON.encode() + b"\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()

    for protocol in (h11_impl.H11Protocol, httptools_impl.HttpToolsProtocol):
        protocol.send_400_response = send_400_response


def middlewares() -> list:
    """What `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names: Serve calls it in each HTTP-serving process."""
    from starlette.middleware import Middleware

    json_parse_errors()
    return [Middleware(BodyGuard)]
