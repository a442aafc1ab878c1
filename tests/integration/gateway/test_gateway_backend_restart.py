"""A call that finds no backend ready waits, within its deadline, for one to come back."""

from __future__ import annotations

import asyncio

import grpc
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.integration.gateway.conftest import StartGateway, StartInference, pair_request


async def test_a_call_during_a_restart_waits_for_the_backend_instead_of_failing(
    start_inference: StartInference, start_gateway: StartGateway, pair_repository: object
) -> None:
    first = await start_inference()
    port = first.grpc.port
    # An ejection of 60 s: the backend comes back in time only because the gateway
    # probes it as soon as its connection is up again, not when the backoff runs out.
    gateway = await start_gateway(
        backends=f"localhost:{port}",
        eject_base_seconds=60,
        eject_max_seconds=60,
        ready_wait_seconds=30,
    )
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ModelInfer(pair_request("1"), timeout=10)).model_version == "1"
        await first.shutdown(0)
        # Sent while the only backend is down: UNAVAILABLE at once without the wait.
        call = asyncio.ensure_future(stub.ModelInfer(pair_request("1"), timeout=40))
        second = InferenceServer(
            InferenceSettings(
                port=port,
                metrics_port=0,
                host="localhost",
                model_repository=str(pair_repository),
                grace_seconds=0,
            )
        )
        await second.start()
        try:
            reply = await call
            assert reply.model_version == "1"
        finally:
            await second.shutdown(0)
