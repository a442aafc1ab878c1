"""A call that fails lets go of its request when it ends, not when the cyclic GC runs.

grpc aio keeps the AbortError that `context.abort` raises on the call's state, and
its traceback holds the handler's frames, which hold the context: a reference cycle.
Every failed call's request (a 63 MB tensor, and each copy of it) stayed alive until
Python's cyclic collector ran, and each new large request took fresh pages. The
error interceptor now sets the status instead of raising it. Each test here runs
with the cyclic collector off, so only reference counting can free the request.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from services.common.errors import InvalidArgument
from services.common.server import GrpcServer, ServiceBinding
from services.common.settings import ServiceSettings

FREED_WITHIN_S = 10.0


class Held:
    """What a handler holds of its request: weakly referable, unlike bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class Watch:
    """An event set when the object last handed to `hold` is freed."""

    def __init__(self) -> None:
        self.freed = asyncio.Event()
        self.held: list[weakref.ref[Held]] = []

    def hold(self, data: bytes) -> Held:
        held = Held(data)
        loop = asyncio.get_running_loop()
        weakref.finalize(held, loop.call_soon_threadsafe, self.freed.set)
        self.held.append(weakref.ref(held))
        return held


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.fixture
async def failing(no_cyclic_gc: None) -> AsyncIterator[tuple[GrpcServer, Watch]]:
    watch = Watch()

    async def unary(request: bytes, context: object) -> bytes:
        held = watch.hold(request)
        raise InvalidArgument(f"refused {len(held.data)} bytes")

    async def stream(request: bytes, context: object) -> AsyncIterator[bytes]:
        held = watch.hold(request)
        yield b"first"
        raise InvalidArgument(f"refused {len(held.data)} bytes")

    identity = {"request_deserializer": None, "response_serializer": None}
    handler = grpc.method_handlers_generic_handler(
        "test.Failing",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **identity),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, **identity),
        },
    )
    server = GrpcServer(
        ServiceSettings(port=0, metrics_port=0),
        [ServiceBinding("test.Failing", lambda s: s.add_generic_rpc_handlers([handler]))],
    )
    await server.start()
    yield server, watch
    await server.shutdown(0)


async def test_a_failed_unary_call_frees_its_request(failing: tuple[GrpcServer, Watch]) -> None:
    server, watch = failing
    async with grpc.aio.insecure_channel(f"localhost:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Failing/Unary")(b"x" * (1 << 20))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"refused {1 << 20} bytes"
    await asyncio.wait_for(watch.freed.wait(), FREED_WITHIN_S)
    assert [ref() for ref in watch.held] == [None]


async def test_a_failed_stream_frees_its_request(failing: tuple[GrpcServer, Watch]) -> None:
    server, watch = failing
    async with grpc.aio.insecure_channel(f"localhost:{server.port}") as channel:
        call = channel.unary_stream("/test.Failing/Stream")(b"y" * (1 << 20))
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in call:
                received.append(item)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await asyncio.wait_for(watch.freed.wait(), FREED_WITHIN_S)
    assert [ref() for ref in watch.held] == [None]
