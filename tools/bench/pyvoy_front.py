"""A prototype, for measurement only: maas inference's own ModelInfer path served by
pyvoy (Envoy's HTTP/2 and gRPC framing, the Python app inside Envoy's process) instead
of grpc.aio. tools/bench/front_cost.py runs it with `.bench/floor`'s pyvoy and this
repository's .venv on PYTHONPATH:

    REPO=<model repository> pyvoy --port 0 --worker-threads 1 --loop uvloop \\
        tools.bench.pyvoy_front:app

The lifespan builds the InferenceServer as services.inference.main does (its grpc.aio
port is up too, idle). A call runs `InferenceServicer.ModelInfer` with the request read
in place (services.inference.received) and a context that carries the metadata and the
grpc-timeout. What it leaves out, and a real front door would need: the interceptors
(metrics, errors as statuses, in-flight), service tokens, TLS, streams, every other
method. An error answers with INTERNAL and the exception's type; nothing here is served.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
PASSED_OVER = {b"content-type", b"te", b"user-agent", b"grpc-accept-encoding", b"grpc-timeout"}
UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Context:
    """The two things ModelInfer asks of a grpc.aio context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout: float | None) -> None:
        self._metadata, self._timeout = metadata, timeout

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._timeout


def grpc_timeout(value: bytes) -> float:
    """Seconds of a grpc-timeout header: digits and a unit (`5S`, `200m`)."""
    return int(value[:-1]) * UNITS[value[-1:]]


def call_context(headers: list[tuple[bytes, bytes]]) -> Context:
    """The caller's metadata (pseudo-headers and transport headers left out) and timeout."""
    timeout, metadata = None, []
    for key, value in headers:
        if key == b"grpc-timeout":
            timeout = grpc_timeout(value)
        elif not key.startswith(b":") and key not in PASSED_OVER:
            metadata.append((key.decode(), value.decode()))
    return Context(tuple(metadata), timeout)


class Front:
    """The ASGI app: one InferenceServer, its ModelInfer behind gRPC framing."""

    def __init__(self) -> None:
        self.server: Any = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._call(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        from services.inference.main import InferenceServer, parse_args
        from services.inference.settings import InferenceSettings

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                flags = ["--model-repository", os.environ["REPO"], "--port", "0"]
                flags += ["--metrics-port", "0", "--log-level", "WARNING"]
                self.server = InferenceServer(InferenceSettings.from_args(parse_args(flags)))
                await self.server.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.server.shutdown(0)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _call(self, scope: Message, receive: Receive, send: Send) -> None:
        from services.inference.received import received

        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        status, reply = b"0", b""
        try:
            request = received(bytes(body[5:]))
            answer = await self.server.forward.inference.ModelInfer(
                request, call_context(scope["headers"])
            )
            reply = answer.SerializeToString()
        except Exception as exc:  # a prototype: the type is enough to see what failed
            status, reply = b"13", type(exc).__name__.encode()
        headers = [(b"content-type", b"application/grpc")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        if status == b"0":
            frame = b"\x00" + len(reply).to_bytes(4, "big") + reply
            await send({"type": "http.response.body", "body": frame, "more_body": False})
            trailers = [(b"grpc-status", b"0")]
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            trailers = [(b"grpc-status", status), (b"grpc-message", reply)]
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})


app = Front()
