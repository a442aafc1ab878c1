"""Without a registry, a version no backend has in any state is NOT_FOUND at once.

The gateway used to wait `ready_wait_seconds` for it as for a version still loading,
then answer UNAVAILABLE; Triton answers an unknown version with NOT_FOUND, and so do
the backends themselves. A version a backend lists (READY or not) is still waited for.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    pair_request,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


async def test_a_version_no_backend_has_is_not_found(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    # A wait long enough that a call held by it would miss the 5 s deadline below.
    gateway = await start_gateway(backends=backend_address(backend), ready_wait_seconds=30)
    stub = connect(gateway)
    assert (await stub.ModelInfer(pair_request("2"), timeout=5)).model_version == "2"
    for call in (
        stub.ModelInfer(pair_request("3"), timeout=5),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="pair", version="3"), timeout=5),
        stub.ModelConfig(pb.ModelConfigRequest(name="pair", version="3"), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is grpc.StatusCode.NOT_FOUND, info.value.details()
        assert "has no version '3'" in (info.value.details() or "")
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="pair", version="3"), timeout=5)
    assert not ready.ready
