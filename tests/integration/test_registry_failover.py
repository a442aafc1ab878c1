"""Inference keeps serving through a registry replica's death, and follows the survivor.

Two `maas-registry` processes on one PostgreSQL and one S3 bucket (SeaweedFS;
each replica polls only every 60 s, so changes travel by LISTEN/NOTIFY). One
inference service follows both through one gRPC target, `ipv4:A,B`, which grpc's
pick_first fails over. Each replica in turn is SIGKILLed while ModelInfer keeps being called;
no call fails, and a version uploaded through the survivor becomes READY.
Unary reads through the same target fail over too: the client's retry policy
sends a read that met the dying connection again, to the survivor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from tests.integration.registry.conftest import ADMIN, READER
from tests.integration.registry.replicas import (  # noqa: F401 - fixtures
    Cluster,
    Replica,
    bucket,
    cluster,
    pg_url,
    s3,
    s3_env,
)

pytestmark = pytest.mark.postgres

DEADLINE = 30.0


@pytest.fixture
def replicas(cluster: Cluster) -> list[Replica]:  # noqa: F811
    """Two registry replicas of `cluster`; stopped with it."""
    env = {"MAAS_REGISTRY_WATCH_POLL_SECONDS": "60"}
    return [cluster.start_replica("--host", "127.0.0.1", env=env) for _ in range(2)]


@pytest.fixture
async def follower(
    replicas: list[Replica], tmp_path: Path, test_models: Path
) -> AsyncIterator[InferenceServer]:
    """Inference following both replicas through one multi-address target; it
    downloads through replica 0 the version uploaded through replica 1."""
    async with RegistryClient(replicas[1].address, ADMIN) as admin:
        await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    server = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="127.0.0.1",
            registry=target,
            registry_token=READER,
            cache_dir=str(tmp_path / "cache"),
            grace_seconds=0,
        )
    )
    await server.start()
    yield server
    await server.shutdown(0)


def infer_request(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair", model_version=version)
    for name in ("a", "b"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    return request


class Load:
    """ModelInfer called back to back until stopped; every failure is kept."""

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        self.stub = stub
        self.answered = 0
        self.failures: list[str] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                reply = await self.stub.ModelInfer(infer_request(), timeout=10)
                assert reply.model_name == "pair"
                self.answered += 1
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.005)  # pacing, so the registry side gets CPU too

    async def answered_more(self, than: int) -> None:
        async with asyncio.timeout(DEADLINE):
            while self.answered <= than:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def ready(stub: pb_grpc.GRPCInferenceServiceStub, version: str) -> None:
    """Wait until inference reports `pair` version `version` READY."""
    async with asyncio.timeout(DEADLINE):
        while True:
            request = pb.ModelReadyRequest(name="pair", version=version)
            try:
                if (await stub.ModelReady(request, timeout=10)).ready:
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:  # not known there yet
                    raise
            await asyncio.sleep(0.05)


async def test_inference_serves_through_each_replica_death_and_follows_the_survivor(
    replicas: list[Replica], follower: InferenceServer, test_models: Path
) -> None:
    # Version 2 is pair_v2 (a + b + 100), version 3 pair again (a + b).
    uploads = {2: ("pair_v2", 100.0), 3: ("pair", 0.0)}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{follower.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await ready(stub, "1")
        load = Load(stub)
        try:
            for number, (dead, survivor) in enumerate([(0, 1), (1, 0)], start=2):
                await load.answered_more(load.answered)
                await asyncio.to_thread(replicas[dead].kill)
                source, offset = uploads[number]
                async with RegistryClient(replicas[survivor].address, ADMIN) as admin:
                    uploaded = await admin.upload("pair", test_models / source / "1" / "model.onnx")
                assert uploaded.version == number
                await ready(stub, str(number))
                reply = await stub.ModelInfer(infer_request(str(number)), timeout=10)
                total = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
                assert total.tolist() == [2.0 + offset, 4.0 + offset, 6.0 + offset, 8.0 + offset]
                await load.answered_more(load.answered)
                # Bring the dead one back on its port, for the next round.
                await asyncio.to_thread(replicas[dead].restart)
                await asyncio.to_thread(replicas[dead].wait_for_port)
        finally:
            await load.stop()
        assert load.failures == []


async def test_unary_calls_fail_over_to_the_surviving_replica(
    replicas: list[Replica], test_models: Path
) -> None:
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    async with RegistryClient(target, READER) as client:
        async with RegistryClient(replicas[1].address, ADMIN) as admin:
            await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
        assert (await client.get_model("pair")).latest_version == 1  # through replica 0
        await asyncio.to_thread(replicas[0].kill)
        # The very next calls, with no retry of ours, are answered by replica 1.
        for _ in range(3):
            assert (await client.resolve("pair")).version == 1
        assert len((await client.snapshot()).models) == 1
