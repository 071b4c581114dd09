"""The HTTP guard (harness.serving.http_guard) as plain ASGI, with a scripted client and a stand-in service: bodies are
read whole and bounded in size and time, refusals are JSON and let the client read them, the service's
answers teach the guard what to admit, and beyond that requests are shed at once. tests/test_serve.py and
tests/test_exposure.py run it in Serve's real proxy."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness.serving.api import RequestError
from harness.serving.http_guard import ADMIT_HEADER, Admission, BodyGuard, ClientGone, read_body


def client(*chunks: bytes, delay_s: float = 0.0, complete: bool = True):
    """An ASGI `receive` giving `chunks` as one body (each `delay_s` apart; `complete`: its last chunk ends it),
    then, asked again, a disconnect (the client leaves)."""
    queue = list(chunks)

    async def receive() -> dict:
        if queue:
            await asyncio.sleep(delay_s)
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or not complete}
        return {"type": "http.disconnect"}

    return receive


def run(coro):
    return asyncio.run(coro)


def test_a_body_is_read_whole_and_bounded() -> None:
    assert run(read_body(client(b"ab", b"cd"), None, max_bytes=4)) == b"abcd"
    with pytest.raises(RequestError) as info:  # declared too long: refused before a byte is read
        run(read_body(client(), 5, max_bytes=4))
    assert info.value.status == 413
    with pytest.raises(RequestError) as info:  # chunked, no length: refused as soon as it passes the limit
        run(read_body(client(b"abc", b"def", b"never read"), None, max_bytes=4))
    assert info.value.status == 413
    with pytest.raises(RequestError) as info:  # a byte at a time, too slowly
        run(read_body(client(b"a", b"b", b"c", delay_s=0.2), None, timeout_s=0.3))
    assert info.value.status == 408 and "0.3 s" in info.value.message
    with pytest.raises(ClientGone):
        run(read_body(client(b"a", complete=False), None))


class Service:
    """A stand-in service behind the guard: records what it received, answers `status` with `headers`."""

    def __init__(self, status: int = 200, headers: list | None = None, body: bytes = b'{"scores": []}',
                 content_type: bytes = b"application/json", hold: asyncio.Event | None = None):
        self.status, self.headers, self.body, self.content_type, self.hold = status, headers or [], body, content_type, hold
        self.received: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        self.received.append(message["body"])
        if self.hold is not None:
            await self.hold.wait()
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type), *self.headers]})
        await send({"type": "http.response.body", "body": self.body})


async def call(guard: BodyGuard, path: str, *chunks: bytes) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": [(b"content-length", str(sum(map(len, chunks))).encode())]}
    await guard(scope, client(*chunks), send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_the_service_gets_the_body_whole_and_plain_errors_become_json() -> None:
    service = Service()
    status, _, _ = run(call(BodyGuard(service), "/v1/score", b'{"ev', b'ents": []}'))
    assert status == 200 and service.received == [b'{"events": []}']
    serve_503 = Service(503, [(b"retry-after", b"1")], b"Request dropped due to backpressure", b"text/plain")
    status, headers, body = run(call(BodyGuard(serve_503), "/v1/score", b"{}"))
    assert status == 503 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "Request dropped due to backpressure"}
    status, headers, body = run(call(BodyGuard(Service(), max_bytes=3), "/v1/score", b"1234"))
    assert status == 413 and headers["connection"] == "close" and "limit of 3" in json.loads(body)["error"]


def test_admission_is_learned_from_the_service_waits_its_turn_and_sheds_beyond() -> None:
    """A service that says "2 slots, 1 may wait": with two requests in and one waiting, a fourth is shed at
    once; the waiting one goes in when a slot frees. Another service (route) is counted apart."""
    async def scenario() -> list:
        hold = asyncio.Event()
        service = Service(headers=[(ADMIT_HEADER.encode(), b"/load-x 2 1 1.5")], hold=hold)
        guard = BodyGuard(service)
        hold.set()
        first = await call(guard, "/load-x/v1/score", b"{}")  # nothing known yet: passes, and teaches the door
        assert ADMIT_HEADER not in first[1]  # the header is for the guard, not the client
        hold.clear()
        busy = [asyncio.create_task(call(guard, "/load-x/v1/score", b"{}")) for _ in range(3)]  # 2 in, 1 waits
        await asyncio.sleep(0.05)
        door = guard.admission.door("/load-x/v1/score")
        assert (door.busy, len(door.waiting)) == (2, 1) and len(service.received) == 3
        shed = await call(guard, "/load-x/v1/score", b"{}")
        other = asyncio.create_task(call(guard, "/load-y/v1/score", b"{}"))  # no door known there: passes
        await asyncio.sleep(0.05)
        hold.set()
        done = await asyncio.gather(*busy, other)
        assert shed[1]["retry-after"] == "2" and "capacity" in json.loads(shed[2])["error"]  # 1.5 s rounded up
        assert (door.busy, len(door.waiting)) == (0, 0) and len(service.received) == 5  # never the shed one
        return [first[0], shed[0], *[d[0] for d in done]]

    assert run(scenario()) == [200, 503, 200, 200, 200, 200]


def test_the_longest_known_route_holds_a_path_and_what_is_remembered_is_bounded() -> None:
    admission = Admission()
    admission.learn(b"/ 8 8 1")
    admission.learn(b"/load-a 2 0 1")
    assert admission.door("/load-a/v1/score").slots == 2 and admission.door("/load-ab/v1/score").slots == 8
    assert admission.door("/anything/v1/score").slots == 8  # a made-up prefix is still the "/" service's
    admission.learn(b"/load-a 4 1 2.0")  # a service's new settings replace its old ones
    assert (admission.door("/load-a").slots, admission.door("/load-a").retry_after) == (4, "2")
    for k in range(2000):  # announcements can come from many services: only so many are remembered
        admission.learn(f"/r{k} 4 0 1".encode())
    assert len(admission.doors) == 1024
    admission.learn(b"/load-a garbage")  # a malformed announcement changes nothing
    assert admission.door("/load-a").slots == 4


def test_a_request_head_must_arrive_whole_in_time(monkeypatch) -> None:
    """In a real uvicorn (httptools, as Serve's proxy runs it): a request line and headers trickled past the
    deadline get a JSON 408 and the connection closes; a head that arrives slowly but in time is served, and so
    is the next request on the connection (each head has its own clock)."""
    import socket
    import threading
    import time

    import uvicorn

    from harness.serving import http_guard

    monkeypatch.setattr(http_guard, "HEAD_TIMEOUT_S", 0.6)
    http_guard.bounded_request_heads()

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def exchange(pieces: list[bytes], gap_s: float) -> bytes:
        with socket.create_connection(sock.getsockname(), timeout=5) as c:
            got = b""
            try:
                for piece in pieces:
                    c.sendall(piece)
                    time.sleep(gap_s)
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused and closed under us: read what it answered
            while chunk := c.recv(65536):
                got += chunk
            return got

    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghij\r\n\r\n"
    try:
        late = exchange([head[k : k + 1] for k in range(len(head))], 0.05)  # ~2.4 s for the head
        in_time = exchange([head[:20], head[20:]], 0.3)
        two = exchange([head, head[:20], head[20:]], 0.3)  # 0.6 s for both heads, 0.3 s for each
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert late.startswith(b"HTTP/1.1 408 "), late
    assert "did not arrive whole within 0.6 s" in json.loads(late.split(b"\r\n\r\n", 1)[1])["error"]
    assert in_time.startswith(b"HTTP/1.1 200 ") and in_time.endswith(b"ok"), in_time
    assert two.count(b"HTTP/1.1 200 ") == 2, two


def test_a_service_names_itself_to_the_door_so_what_the_door_answers_is_counted_under_its_labels() -> None:
    from harness.serving.http_guard import admit_header

    admission = Admission()
    told = admit_header("/load-a", 2, 0, 1.0, "load a", "edge")  # names are quoted: one field each
    assert told.split()[4:] == ["load%20a", "edge"]
    admission.learn(b"/load-a 2 0 1 load-a edge")
    door = admission.door("/load-a/v1/score")
    assert door.metrics.app == {"application": "load-a", "target": "edge"}
    kept = door.metrics
    admission.learn(b"/load-a 2 0 1 load-a edge")  # told again with every answer: the same object
    assert door.metrics is kept
    admission.learn(b"/load-a 2 0 1 load-a")  # half a name is malformed: nothing changes
    assert door.metrics is kept and admission.door("/old/v1/score") is None
    admission.learn(b"/old 2 0 1")  # a service that does not name itself still gets a door, uncounted
    assert admission.door("/old/v1/score").metrics is None
