"""A delaying TCP relay: listens on one address, forwards to another, and holds every chunk for a random delay
(each direction its own share), never letting a chunk overtake the one before it.

`harness cluster up` runs one in each node's namespace for each service port: `<node ip>:<port>` → the service
on `127.0.0.1:<port>`. Where the kernel has `netem`, the link is shaped there and the relay adds nothing; where it
has not, the relay adds the link's delay and jitter to the service's traffic (and only to it).

    python -m harness.topology.relay --listen 10.231.0.3:8000 --to 127.0.0.1:8000 --delay-ms 20 --jitter-ms 2.5
"""

from __future__ import annotations

import argparse
import asyncio
import random

CHUNK = 65536
MAX_HELD = 256  # chunks held at once, per direction of a connection


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float, jitter_s: float,
                rng: random.Random) -> None:
    """Copy reader → writer; each chunk is written `delay ± jitter` after it arrived, in order. The end of the
    stream is passed on as a half-close, so the other direction goes on until it ends too."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_HELD)  # full: stop reading (backpressure)

    async def release() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(release())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(CHUNK)
            due = max(loop.time() + max(delay_s + rng.uniform(-jitter_s, jitter_s), 0.0), last_due)  # order kept
            last_due = due
            await queue.put((due, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


async def serve(listen: tuple[str, int], to: tuple[str, int], delay_ms: float = 0.0, jitter_ms: float = 0.0,
                seed: int | None = None) -> asyncio.base_events.Server:
    """Start the relay; `delay_ms` and `jitter_ms` apply to each direction (half the link's round trip)."""
    rng = random.Random(seed)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*to)
        except OSError:
            client_w.close()
            return
        d, j = delay_ms / 1e3, jitter_ms / 1e3
        try:
            await asyncio.gather(_pipe(client_r, server_w, d, j, rng), _pipe(server_r, client_w, d, j, rng))
        finally:
            for w in (server_w, client_w):
                w.close()

    return await asyncio.start_server(handle, *listen, reuse_address=True)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m harness.topology.relay", description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=_address, required=True, help="HOST:PORT to listen on")
    p.add_argument("--to", type=_address, required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=float, default=0.0, help="added to each chunk, each direction")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- spread of that delay")
    args = p.parse_args()

    async def run() -> None:
        server = await serve(args.listen, args.to, args.delay_ms, args.jitter_ms)
        print(f"relay {args.listen[0]}:{args.listen[1]} -> {args.to[0]}:{args.to[1]} (+{args.delay_ms:g} ms each way)", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
