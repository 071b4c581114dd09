"""Run inside a network namespace: every TCP socket listening beyond loopback, each tried as an attacker would,
from the namespace's routable address: an unauthenticated gRPC call to Serve's replica service (the one that
unpickles what it is sent), and, if that port is no gRPC server, an HTTP GET of /v1/status without a token.
Prints one JSON object per listener:

    {"listen": "*:41873", "process": "ray::ServeRepli", "grpc": "UNAUTHENTICATED", "http": null}
    {"listen": "0.0.0.0:8000", "process": "ray::ProxyActor", "grpc": "UNAVAILABLE", "http": 401}

    python tests/net_probe.py ADDRESS      (ADDRESS: this namespace's routable address, the one dialled)
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request


def listeners() -> list[tuple[str, int, str]]:
    """(local address, port, process name) of each listening TCP socket not bound to loopback."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        if address in ("[::1]", "[::ffff:127.0.0.1]") or address.startswith("127."):
            continue
        name = re.search(r'\(\("([^"]+)"', line)
        found.append((address, int(port), name.group(1) if name else "?"))
    return found


def grpc_call(address: str, port: int) -> str:
    """The gRPC status of an unauthenticated call to Serve's replica service."""
    import grpc

    with grpc.insecure_channel(f"{address}:{port}") as channel:
        method = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        try:
            method(b"\x0a\x00", timeout=10)
            return "OK"
        except grpc.RpcError as exc:
            code = exc.code()
            return code.name if code is not None else "no gRPC"


def http_status(address: str, port: int) -> int | str:
    """The status of GET /v1/status without a token (or why there is none)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/v1/status", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException) as exc:
        return f"no HTTP: {type(exc).__name__}"


def main() -> None:
    address = sys.argv[1]
    for local, port, process in listeners():
        grpc = grpc_call(address, port)
        http = http_status(address, port) if grpc != "UNAUTHENTICATED" else None
        print(json.dumps({"listen": f"{local}:{port}", "process": process, "grpc": grpc, "http": http}), flush=True)


if __name__ == "__main__":
    main()
