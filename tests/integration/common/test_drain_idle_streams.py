"""A draining server stops once its work is done, not when health Watches end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings

SERVICE = "inference.GRPCInferenceService"


def pair_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


async def test_open_health_watches_do_not_hold_a_drain_for_its_grace(test_models: Path) -> None:
    server = InferenceServer(
        InferenceSettings(port=0, metrics_port=0, model_repository=str(test_models))
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # As a gateway does: one Watch per model, open for as long as the server runs.
        watches = [
            health.Watch(health_pb2.HealthCheckRequest(service=name)) for name in ("pair", SERVICE)
        ]
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ModelInfer(pair_request(), timeout=10)).outputs
        # A grace of 10 minutes: the pytest timeout fails the test if the drain
        # waited for the watches to end by themselves.
        await asyncio.wait_for(server.shutdown(600), timeout=60)
        for watch in watches:
            statuses = []
            try:
                while (reply := await watch.read()) is not grpc.aio.EOF:
                    statuses.append(reply.status)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            assert set(statuses) <= {health_pb2.HealthCheckResponse.NOT_SERVING}
