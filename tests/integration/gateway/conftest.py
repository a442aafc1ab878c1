"""Gateway integration fixtures: real registry, inference and gateway servers on port 0.

The inference servers run in directory mode over a repository holding the same
`pair` model as versions 1 and 2 (the registry holds the same files), so the
answering version shows in each response's model_version.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.server import GrpcServer, ServiceBinding
from services.common.settings import ServiceSettings
from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.redisserver import RedisServer, running_redis

StartInference = Callable[..., Awaitable[InferenceServer]]
StartGateway = Callable[..., Awaitable[GatewayServer]]


def pair_request(version: str = "", rows: int = 1, id: str = "") -> pb.ModelInferRequest:
    """A `pair` request with a = 1..4 and b = 1 per row, as raw contents."""
    a = np.tile(np.arange(1, 5, dtype=np.float32), (rows, 1))
    b = np.ones((rows, 4), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="pair", model_version=version, id=id)
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.extend([a.tobytes(), b.tobytes()])
    return request


def output(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    """One FP32 output of a response, from its raw contents."""
    index = [o.name for o in response.outputs].index(name)
    shape = list(response.outputs[index].shape)
    return np.frombuffer(response.raw_output_contents[index], np.float32).reshape(shape)


@pytest.fixture
def pair_repository(test_models: Path, tmp_path: Path) -> Path:
    """A model repository with `pair` as versions 1 and 2."""
    root = tmp_path / "repository"
    for version in (1, 2):
        target = root / "pair" / str(version)
        target.mkdir(parents=True)
        shutil.copy(test_models / "pair" / "1" / "model.onnx", target / "model.onnx")
    return root


@pytest.fixture
async def start_inference(pair_repository: Path) -> AsyncIterator[StartInference]:
    """Start inference servers over the pair repository; all stop at the end."""
    started: list[InferenceServer] = []

    async def start(repository: Path | None = None) -> InferenceServer:
        settings = InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(repository or pair_repository),
            grace_seconds=0,
        )
        server = InferenceServer(settings)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(0)


@pytest.fixture
async def start_following(
    registry: RegistryServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[InferenceServer]]]:
    """Start inference servers that follow the registry (each with its own cache)."""
    started: list[InferenceServer] = []

    async def start(models: str = "") -> InferenceServer:
        server = InferenceServer(
            InferenceSettings(
                port=0,
                metrics_port=0,
                host="localhost",
                registry=registry_address(registry),
                registry_token=READER,
                models=models,
                cache_dir=str(tmp_path / f"cache-{len(started)}"),
                grace_seconds=0,
            )
        )
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(0)


@pytest.fixture
async def pair_in_registry(admin: RegistryClient, test_models: Path) -> RegistryClient:
    """`pair` uploaded twice, with `production` on version 1."""
    for _ in range(2):
        await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    await admin.set_alias("pair", "production", 1)
    return admin


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, on a free port (the shared rate-limit tests)."""
    with running_redis() as server:
        yield server


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start gateways with settings overrides (no auth unless keys are given)."""
    started: list[GatewayServer] = []

    async def start(**overrides: Any) -> GatewayServer:
        rng = overrides.pop("rng", None)
        values: dict[str, Any] = {
            "port": 0,
            "metrics_port": 0,
            "http_port": 0,
            "host": "localhost",
            "grace_seconds": 0,
            "no_auth": "api_keys" not in overrides and "api_keys_file" not in overrides,
            "eject_base_seconds": 0.5,
        }
        values.update(overrides)
        server = GatewayServer(GatewaySettings(**values), rng=rng)
        await server.start(ready_timeout=10)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(0)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `condition` until it holds, failing after `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def registry_address(registry: RegistryServer) -> str:
    return f"localhost:{registry.server.port}"


def backend_address(server: InferenceServer) -> str:
    return f"localhost:{server.grpc.port}"


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]]:
    """Stubs of the v2 service on gateways; channels close at the end."""
    channels: list[grpc.aio.Channel] = []

    def stub(gateway: GatewayServer) -> pb_grpc.GRPCInferenceServiceStub:
        channel = grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}")
        channels.append(channel)
        return pb_grpc.GRPCInferenceServiceStub(channel)

    yield stub
    for channel in channels:
        await channel.close()


V2_SERVICE = "inference.GRPCInferenceService"
RawMethod = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


async def v2_server(methods: dict[str, RawMethod]) -> GrpcServer:
    """A real gRPC server answering only these v2 methods (raw bytes in and out), with
    the usual health service: a backend unlike maas-inference. Shut it down after."""
    handler = grpc.method_handlers_generic_handler(
        V2_SERVICE,
        {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()},
    )
    server = GrpcServer(
        ServiceSettings(port=0, host="localhost"),
        [ServiceBinding(V2_SERVICE, lambda s: s.add_generic_rpc_handlers((handler,)))],
    )
    await server.start()
    return server
