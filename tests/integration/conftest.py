"""In-process servers for integration tests, started through their public start()."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer, create_server
from services.registry.settings import RegistrySettings

# The registry fixture's tokens.
ADMIN = "admin-secret"
READER = "reader-secret"


@pytest.fixture
async def inference_server(test_models: Path) -> AsyncIterator[InferenceServer]:
    """The inference service on port 0 over the shared test models."""
    server = InferenceServer(
        InferenceSettings(
            port=0, metrics_port=0, model_repository=str(test_models), grace_seconds=1
        )
    )
    await server.start()
    yield server
    await server.shutdown(0)


@pytest.fixture
async def channel(inference_server: InferenceServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the in-process inference server."""
    async with grpc.aio.insecure_channel(f"localhost:{inference_server.grpc.port}") as ch:
        yield ch


StartInferenceAt = Callable[..., Awaitable[InferenceServer]]


@pytest.fixture
async def start_inference_at() -> AsyncIterator[StartInferenceAt]:
    """Start inference servers on port 0 over a model repository, with settings
    overrides: `await start(repository, service_token=...)`; all stop at the end."""
    started: list[InferenceServer] = []

    async def start(repository: Path, **overrides: Any) -> InferenceServer:
        settings = InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(repository),
            grace_seconds=0,
            **overrides,
        )
        server = InferenceServer(settings)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.shutdown(0)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryServer]:
    """A registry with admin and reader tokens, polling its change feed quickly."""
    settings = RegistrySettings(
        data_dir=tmp_path / "registry",
        host="localhost",
        port=0,
        metrics_port=0,
        admin_token=ADMIN,
        reader_token=READER,
        grace_seconds=0,
        watch_poll_seconds=0.1,
    )
    server = await create_server(settings)
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def admin(registry: RegistryServer) -> AsyncIterator[RegistryClient]:
    """An admin client of the registry."""
    async with RegistryClient(f"localhost:{registry.server.port}", ADMIN) as client:
        yield client
