"""The scoring service's HTTP front door, as plain ASGI (no Ray), in the process that accepts connections:

- bodies are read whole, bounded in size (chunked ones too) and in time, before any replica is involved;
- requests are admitted as the service says (`Admission`): the rest wait their turn here, or are shed at once
  with 503 + Retry-After, instead of queueing in Serve's router;
- request heads are bounded in size (431) and in time (408), and every error is JSON, uvicorn's own parse errors included.

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
put `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=harness.serving.http_guard:middlewares` in every node's environment
(clusters/ does). Without it the replica still enforces the same limits itself (`read_body`), but a slow body
then holds a replica slot until its deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from typing import Any, Awaitable, Callable

from harness.serving.api import BODY_TIMEOUT_S, JSON, MAX_BODY_BYTES, RequestError
from harness.serving.metrics import ServiceMetrics, route_of

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IMPORT_PATH = "harness.serving.http_guard:middlewares"
ADMIT_HEADER = "x-harness-admit"  # "<route> <slots> <queue> <retry-after s> [<application> <target>]": what a
# service tells the guard (admit_header); application and target (URL-quoted) label what the guard counts
MAX_ROUTES = 1024  # services (route prefixes) whose admission a guard remembers


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
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):  # a timer, not a task: cheap on the path every request takes
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
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise RequestError(f"the body did not arrive whole within {timeout_s:g} s of the request's headers", 408) from None


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


LINGER_BYTES = 8 << 20  # after refusing a body, this much more of it is read and dropped (at most LINGER_S)...
LINGER_S = 1.0  # ...so the client, still sending, reads the answer before the connection closes under it


async def send_error(send: Send, status: int, message: str, receive: Receive | None = None,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON error answer. With `receive` (a body left unread), the connection closes after it: the answer is
    written whole first, then up to LINGER_BYTES of the body are drained (LINGER_S at most) before the answer
    ends, because closing a socket with unread data resets the connection and can take the answer with it."""
    body = error_body(message)
    head = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()), *(headers or [])]
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
    """ASGI middleware: read each HTTP request's body whole, bounded (see the module docstring), then admit it,
    let it wait its turn, or shed it (`Admission`), then pass it on with the body replayed; answer Serve's own plain-text errors (no route,
    backpressure, timeout) as JSON too."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = MAX_BODY_BYTES,
                 timeout_s: float = BODY_TIMEOUT_S):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.admission = Admission()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        try:
            body = await read_body(receive, declared_length(scope), self.max_bytes, self.timeout_s)
        except RequestError as exc:
            door = self.admission.door(path)
            if door is not None and door.metrics is not None:
                door.metrics.answered(route_of(path), exc.status)
            return await send_error(send, exc.status, exc.message, receive)
        except ClientGone:
            return None
        door = self.admission.door(path)
        if door is not None and not await door.enter():
            if door.metrics is not None:
                door.metrics.shed(route_of(path))
            return await send_error(send, 503, "the service is at capacity: retry after the Retry-After seconds",
                                    headers=[(b"retry-after", door.retry_after.encode())])
        try:
            await self._pass(scope, receive, as_json_errors(self.admission.learning(send)), body)
        finally:
            if door is not None:
                door.leave()

    async def _pass(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then only the disconnect, if the client leaves

        await self.app(scope, replay, send)


class Door:
    """One service's admission at this proxy: `slots` requests pass at once; up to `queue` more wait here, in
    order, for one of them (a wait that costs nothing: no retries); any more are shed with `retry_after`.
    `metrics`: where what the door answers itself is counted (None: the service did not say who it is)."""

    def __init__(self, slots: int, queue: int, retry_after: str, metrics: ServiceMetrics | None = None):
        self.slots, self.queue, self.retry_after, self.metrics = slots, queue, retry_after, metrics
        self.who: tuple[str, ...] = ()  # the application and target the metrics are labelled with, as told
        self.busy = 0
        self.waiting: deque[asyncio.Future] = deque()

    async def enter(self) -> bool:
        """Take a slot (waiting for one if there is room in the queue); False: shed."""
        if self.busy < self.slots and not self.waiting:
            self.busy += 1
            return True
        if len(self.waiting) >= self.queue:
            return False
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await turn  # `leave` hands its slot over
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # the slot came with the cancellation: pass it on
            else:
                self.waiting.remove(turn)
            raise
        return True

    def leave(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.busy -= 1


class Admission:
    """Each service's `Door` at this proxy, keyed by its route prefix. The service says what to admit in its
    answers (ADMIT_HEADER: its route, its ingress replicas' request slots, how many may wait, the Retry-After), so
    the settings live with it (serve.max_ongoing_requests, max_queued_requests, retry_after_s). Requests wait
    here rather than in Serve's router, whose queued requests retry under backoff while the replica idles: an
    overloaded service scored 3% of its peak that way. A request under no known route passes (a service that
    has not answered yet)."""

    def __init__(self) -> None:
        self.doors: dict[str, Door] = {}

    def door(self, path: str) -> Door | None:
        """The door of the service whose route is the longest prefix of `path`."""
        best = None
        for route, door in self.doors.items():
            if (path == route or path.startswith(route.rstrip("/") + "/")) and (best is None or len(route) > len(best[0])):
                best = (route, door)
        return best[1] if best else None

    def learning(self, send: Send) -> Send:
        """`send`, reading (and removing) ADMIT_HEADER from an answer's head to learn its service's door."""
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                told = next((v for k, v in headers if k.lower() == ADMIT_HEADER.encode()), None)
                if told is not None:
                    self.learn(told)
                    message = {**message, "headers": [(k, v) for k, v in headers if k.lower() != ADMIT_HEADER.encode()]}
            await send(message)

        return wrapped

    def learn(self, told: bytes) -> None:
        """From ADMIT_HEADER's value (admit_header); a malformed announcement changes nothing."""
        from urllib.parse import unquote

        try:
            route, slots, queue, retry_after, *who = told.decode().split()
            settings = (int(slots), int(queue), str(max(1, math.ceil(float(retry_after)))))  # whole seconds
            if len(who) not in (0, 2):
                raise ValueError(who)
        except ValueError:
            return
        known = self.doors.get(route)
        if known is not None:
            known.slots, known.queue, known.retry_after = settings
        elif len(self.doors) < MAX_ROUTES:
            self.doors[route] = known = Door(*settings)
        else:
            return
        if who and tuple(who) != known.who:  # told on every answer: compared as told, made once
            known.who, known.metrics = tuple(who), ServiceMetrics(unquote(who[0]), unquote(who[1]))


def admit_header(route: str, slots: int, queue: int, retry_after_s: float, application: str, target: str) -> str:
    """ADMIT_HEADER's value: what the guard is to admit for the service at `route`, and who the service is."""
    from urllib.parse import quote

    return f"{route} {slots} {queue} {retry_after_s:g} {quote(application, safe='')} {quote(target, safe='')}"


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


MAX_HEAD_BYTES = 64 * 1024  # a request line and headers longer than this are refused (431)
HEAD_TIMEOUT_S = 10.0  # ...and a request line and headers not whole this long after their first byte (408)


def bounded_request_heads(max_bytes: int = MAX_HEAD_BYTES) -> None:
    """Make uvicorn's httptools protocol refuse a request whose line and headers exceed `max_bytes` (431, JSON), or
    are not whole within HEAD_TIMEOUT_S of their first byte (408, JSON): the parser keeps an unfinished header or
    URL in memory whole, so one connection sending an endless header grew the proxy by 270 MB for 200 MB sent,
    and uvicorn has no deadline for a head (a client sending it a byte a second held its connection for as long
    as it liked: tests/chaos/test_serving_chaos.py). Counted per request, from its first byte to its headers' end."""
    from uvicorn.protocols.http import httptools_impl

    protocol = httptools_impl.HttpToolsProtocol
    if getattr(protocol, "_harness_bounded", False):
        return
    data_received, headers_complete, message_complete = (
        protocol.data_received, protocol.on_headers_complete, protocol.on_message_complete)

    def on_headers_complete(self) -> None:
        self._harness_in_body = True
        timer = getattr(self, "_harness_timer", None)
        if timer is not None:
            timer.cancel()
        headers_complete(self)

    def on_message_complete(self) -> None:
        self._harness_in_body, self._harness_head = False, 0
        message_complete(self)

    def bounded(self, data: bytes) -> None:
        if getattr(self, "_harness_refused", False):
            return  # answered already: what the client still sends is dropped until the connection closes
        if not getattr(self, "_harness_in_body", False):
            if not getattr(self, "_harness_head", 0) and data:  # a request's first byte: its head's clock starts
                self._harness_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, _head_late, self)
            self._harness_head = getattr(self, "_harness_head", 0) + len(data)
        data_received(self, data)
        if (not getattr(self, "_harness_in_body", False) and self._harness_head > max_bytes
                and not self.transport.is_closing()):
            _refuse_head(self, "431 Request Header Fields Too Large", f"the request line and headers exceed {max_bytes} bytes")

    protocol.data_received, protocol.on_headers_complete, protocol.on_message_complete = (
        bounded, on_headers_complete, on_message_complete)
    protocol._harness_bounded = True


def _head_late(proto: Any) -> None:
    """The head's deadline passed: refuse it, unless its headers arrived (or the connection went) meanwhile."""
    if not getattr(proto, "_harness_in_body", False) and not getattr(proto, "_harness_refused", False) \
            and not proto.transport.is_closing():
        _refuse_head(proto, "408 Request Timeout",
                     f"the request line and headers did not arrive whole within {HEAD_TIMEOUT_S:g} s")


def _refuse_head(proto: Any, status: str, message: str) -> None:
    """Answer a request whose head is refused (JSON) and close: closing now, with the client's data unread, would
    reset the connection and lose the answer, so end the sending side, drop what still arrives, close after
    LINGER_S."""
    timer = getattr(proto, "_harness_timer", None)
    if timer is not None:
        timer.cancel()
    body = error_body(message)
    proto.transport.write(f"HTTP/1.1 {status}\r\ncontent-type: {JSON}\r\ncontent-length: {len(body)}\r\n"
                          "connection: close\r\n\r\n".encode() + body)
    proto._harness_refused = True
    if proto.transport.can_write_eof():
        proto.transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER_S, proto.transport.close)


def middlewares() -> list:
    """What `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names: Serve calls it in each HTTP-serving process."""
    from starlette.middleware import Middleware

    json_parse_errors()
    bounded_request_heads()
    return [Middleware(BodyGuard)]
