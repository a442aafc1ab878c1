"""A gateway whose registry Watch is away while the backends follow a rollout.

The gateway reaches the registry through a TCP relay the test can freeze (the
gateway's Watch then hears nothing, as when its connection is stuck or backing
off), while the backend follows the registry directly. The backends move
`production` to a version the gateway's route table does not know and unload the
old one: a request naming no version must still be answered, by the version the
backends moved to, rather than sent as the old number that no backend has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    backend_address,
    pair_request,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
StartFollowing = Callable[..., Awaitable[InferenceServer]]


class FreezableRelay:
    """Relays TCP connections to `target`; while frozen, holds every byte back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "localhost", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("localhost", self.target_port)
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(a, b))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        self.flowing.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(registry: RegistryServer) -> AsyncIterator[FreezableRelay]:
    relay = FreezableRelay(registry.server.port)
    yield relay
    await relay.close()


async def test_a_request_is_answered_when_the_backends_are_ahead_of_the_route_table(
    registry: RegistryServer,
    admin: RegistryClient,
    relay: FreezableRelay,
    test_models: Path,
    start_following: StartFollowing,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    graph = test_models / "pair" / "1" / "model.onnx"
    await admin.upload("pair", graph)
    await admin.set_alias("pair", "production", 1)
    backend = await start_following()
    port = await relay.start()
    gateway = await start_gateway(
        registry=f"localhost:{port}", registry_token=READER, backends=backend_address(backend)
    )
    stub = connect(gateway)
    assert (await stub.ModelInfer(pair_request(), timeout=10)).model_version == "1"

    relay.flowing.clear()  # the gateway hears nothing from the registry from here on
    await admin.upload("pair", graph)
    await admin.set_alias("pair", "production", 2)
    await until(
        lambda: backend.manager.ready("pair", "2") and not backend.manager.ready("pair", "1"),
        60,
    )
    assert gateway.app.routes is not None
    assert 2 not in gateway.app.routes.models["pair"].versions  # the table is behind

    for _ in range(3):
        reply = await stub.ModelInfer(pair_request(), timeout=10)
        assert reply.model_version == "2"
