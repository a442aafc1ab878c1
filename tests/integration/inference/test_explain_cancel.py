"""A cancelled explanation stops sending rows: KernelSHAP's worker thread ends at its
next evaluation instead of running its samples to the end."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from maas_proto.explain.v1 import explain_pb2_grpc

from services.inference.explain import kernel_shap
from services.inference.main import InferenceServer
from tests.integration.inference.explain_models import explain_request, inference_count

# 1 background row of 1024 features: 2 + 1 * (2048 + 1) rows when run to the end.
FULL = 2 + 2048 + 1


async def test_cancelled_kernel_shap_stops_its_evaluations(
    inference_server: InferenceServer, channel: grpc.aio.Channel
) -> None:
    stub = explain_pb2_grpc.ExplainerStub(channel)
    request = explain_request(
        "slow",
        {"x": np.ones((1, 1024), np.float32)},
        "kernel_shap",
        background={"x": np.zeros((1, 1024), np.float32)},
        max_evaluations=FULL,
    )
    start = await inference_count(channel, "slow")
    call = stub.Explain(request, timeout=120)
    async with asyncio.timeout(60):
        # Past the input and the background: shap's samples are on their way.
        while await inference_count(channel, "slow") - start <= 3:
            await asyncio.sleep(0.01)
        assert kernel_shap._SHAP_RANDOM.locked()
        call.cancel()
        # shap's thread holds the lock until it has stopped.
        while kernel_shap._SHAP_RANDOM.locked():
            await asyncio.sleep(0.01)
    sent = await inference_count(channel, "slow") - start
    assert 0 < sent < FULL
    assert await inference_count(channel, "slow") - start == sent
