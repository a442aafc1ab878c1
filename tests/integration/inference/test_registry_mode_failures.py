"""Registry mode through real servers: a version whose warm-up fails, and bursts of events.

- A failed version is UNAVAILABLE with the reason, the other models serve, and watch
  events do not reload it: it is tried again only after a backoff.
- The cache's state file is written once per batch of watch events, not per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.registry_source import STATE_FILE, RegistrySource
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.inference.warmup_models import export_rows_of_three

StartFollower = Callable[..., Awaitable[InferenceServer]]


@pytest.fixture(scope="module")
def rows_of_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx of the Reshape model that the default warm-up breaks."""
    return export_rows_of_three(tmp_path_factory.mktemp("rows") / "model.onnx")


@pytest.fixture
async def start_follower(registry: RegistryServer, tmp_path: Path) -> AsyncIterator[StartFollower]:
    """Start inference servers that follow the registry; all stop at the end."""
    started: list[InferenceServer] = []

    async def start(**overrides: Any) -> InferenceServer:
        settings = InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            registry=f"localhost:{registry.server.port}",
            registry_token=READER,
            cache_dir=str(tmp_path / f"cache-{len(started)}"),
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


def follower(server: InferenceServer) -> RegistrySource:
    assert server.follower is not None
    return server.follower


async def caught_up(server: InferenceServer, admin: RegistryClient) -> int:
    """Wait until the follower has applied every change the registry has made."""
    revision = (await admin.snapshot()).revision
    source = follower(server)
    async with asyncio.timeout(10):
        while source.revision is None or source.revision < revision:
            await asyncio.sleep(0.01)
    return revision


def load_failures(server: InferenceServer, model: str) -> float:
    value = server.metrics_registry.get_sample_value(
        "maas_inference_model_load_failures_total", {"model": model}
    )
    return value or 0.0


async def index(server: InferenceServer) -> dict[tuple[str, str], tuple[str, str]]:
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    return {(m.name, m.version): (m.state, m.reason) for m in reply.models}


async def test_failed_warmup_is_unavailable_and_events_do_not_reload_it(
    admin: RegistryClient,
    start_follower: StartFollower,
    test_models: Path,
    rows_of_three: Path,
) -> None:
    await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    await admin.upload("rows", rows_of_three)
    server = await start_follower(load_retry_seconds=3600)
    rows = await index(server)
    assert rows[("pair", "1")] == ("READY", "")
    state, reason = rows[("rows", "1")]
    assert state == "UNAVAILABLE" and "warm-up with zeros" in reason
    assert load_failures(server, "rows") == 1
    # Events for the broken model (and others) arrive; none of them reloads it.
    for i in range(5):
        await admin.set_alias("rows", f"alias{i}", 1)
        await admin.set_alias("pair", f"alias{i}", 1)
    await caught_up(server, admin)
    assert load_failures(server, "rows") == 1
    rows = await index(server)
    assert rows[("rows", "1")][0] == "UNAVAILABLE" and rows[("pair", "1")][0] == "READY"
    assert server.manager.aliases("pair") == {f"alias{i}": 1 for i in range(5)}
    assert server.manager.aliases("rows") == {}
    # A new version with a warm-up that fits loads at once, and the alias follows it.
    await admin.upload("rows", rows_of_three, config="warmup: [{inputs: {x: {shape: [3]}}}]")
    await admin.set_alias("rows", "production", 2)
    await caught_up(server, admin)
    assert (await index(server))[("rows", "2")] == ("READY", "")
    assert server.manager.aliases("rows")["production"] == 2


async def test_a_failed_version_is_retried_with_backoff(
    admin: RegistryClient,
    start_follower: StartFollower,
    rows_of_three: Path,
) -> None:
    await admin.upload("rows", rows_of_three)
    server = await start_follower(load_retry_seconds=0.05, load_retry_max_seconds=0.4)
    async with asyncio.timeout(10):
        while load_failures(server, "rows") < 4:
            await asyncio.sleep(0.01)
    state, reason = (await index(server))[("rows", "1")]
    assert state == "UNAVAILABLE" and "warm-up" in reason


async def test_state_file_is_written_once_per_batch_of_events(
    admin: RegistryClient, start_follower: StartFollower, test_models: Path
) -> None:
    for _ in range(2):
        await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    await admin.set_alias("pair", "production", 1)
    server = await start_follower()
    await caught_up(server, admin)
    source = follower(server)
    before = source.state_writes
    # While the model's lock is held, the source cannot finish applying; the burst of
    # events that arrives meanwhile is applied as one batch afterwards.
    async with server.manager.lock("pair"):
        for i in range(10):
            await admin.set_alias("pair", "production", 2 - i % 2)
        revision = (await admin.snapshot()).revision
        async with asyncio.timeout(10):
            while source.received is None or source.received < revision:
                await asyncio.sleep(0.01)
    await caught_up(server, admin)
    assert source.state_writes - before <= 2
    assert server.manager.aliases("pair")["production"] == 1
    state = (Path(source.cache_dir) / STATE_FILE).read_text()
    assert '"production": 1' in state
    # Bookmarks and events that change nothing served write nothing.
    writes = source.state_writes
    await admin.set_alias("pair", "production", 1)
    await caught_up(server, admin)
    assert source.state_writes == writes
