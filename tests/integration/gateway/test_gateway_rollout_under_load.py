"""Rolling out a new version under load through real servers costs no request an error."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
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
    registry_address,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
StartFollowing = Callable[..., Awaitable[InferenceServer]]
CLIENTS = 8


# A call waits up to ready_wait_seconds for a backend with its version ready. With a
# wait far past the clients' deadline, a call that waited for a version that its
# backends had unloaded (instead of going to the one they loaded) fails its deadline.
LONG_WAIT = 60.0
DEADLINE = 5.0


@pytest.mark.parametrize("production", [True, False], ids=["production-alias", "latest"])
@pytest.mark.parametrize("ready_wait", [None, LONG_WAIT], ids=["default-wait", "long-wait"])
async def test_a_new_version_takes_traffic_only_once_ready_and_no_request_fails(
    production: bool,
    ready_wait: float | None,
    registry: RegistryServer,
    admin: RegistryClient,
    test_models: Path,
    start_following: StartFollowing,
    start_gateway: StartGateway,
    connect: Connect,
) -> None:
    graph = test_models / "pair" / "1" / "model.onnx"
    for _ in range(2):
        await admin.upload("pair", graph)
    if production:
        await admin.set_alias("pair", "production", 2)
    backends = [await start_following(), await start_following()]
    waits = {} if ready_wait is None else {"ready_wait_seconds": ready_wait}
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=",".join(backend_address(b) for b in backends),
        **waits,
    )
    stub = connect(gateway)
    assert (await stub.ModelInfer(pair_request(), timeout=10)).model_version == "2"

    answered: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                reply = await stub.ModelInfer(pair_request(), timeout=DEADLINE)
                answered[reply.model_version] += 1
            except grpc.aio.AioRpcError as exc:
                failed[f"{exc.code().name}: {exc.details()}"] += 1

    clients = [asyncio.ensure_future(client()) for _ in range(CLIENTS)]
    try:
        await until(lambda: answered.total() >= 100, 30)
        await admin.upload("pair", graph)  # version 3: the latest
        if production:
            await admin.set_alias("pair", "production", 3)
        # Version 3 serves, and every backend has unloaded version 2 meanwhile.
        await until(
            lambda: (
                answered["3"] >= 200 and not any(b.manager.ready("pair", "2") for b in backends)
            ),
            60,
        )
    finally:
        stop.set()
        await asyncio.gather(*clients)
    sent = answered.total() + failed.total()
    print(
        f"rollout ({'production alias' if production else 'latest'}): {sent} sent, "
        f"{failed.total()} failed, answered by version {dict(answered)}"
    )
    assert not failed, failed
    assert set(answered) == {"2", "3"}
