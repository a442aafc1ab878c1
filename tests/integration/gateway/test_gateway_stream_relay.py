"""The gateway answers each stream request of a model that answers once.

Through real servers (inference over the `pair` repository, a gateway without a
registry): a tensor model's request keeps the unary backend call, its reply the
request's one response flagged `triton_final_response`; requests answered on one
stream each run once, and a request that fails is answered with an error while the
stream goes on. (A decoupled model's requests go over backend streams:
test_gateway_stream_generate.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    output,
    pair_request,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
FINAL = "triton_final_response"


async def send(requests: list[pb.ModelInferRequest]) -> AsyncIterator[pb.ModelInferRequest]:
    for request in requests:
        yield request


async def test_stream_responses_of_a_tensor_model_carry_the_final_flag(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    first, second = await start_inference(), await start_inference()
    gateway = await start_gateway(backends=f"{backend_address(first)},{backend_address(second)}")
    stub = connect(gateway)
    bad = pair_request(id="bad")
    bad.model_name = "nope"
    requests = [pair_request("2", id=f"r{i}") for i in range(8)] + [bad]
    replies = [r async for r in stub.ModelStreamInfer(send(requests), timeout=20)]
    by_id = {r.infer_response.id: r for r in replies}
    assert len(replies) == 9 and set(by_id) == {f"r{i}" for i in range(8)} | {"bad"}
    for i in range(8):
        reply = by_id[f"r{i}"]
        assert not reply.error_message
        assert reply.infer_response.parameters[FINAL].bool_param is True
        assert reply.infer_response.model_version == "2"
        np.testing.assert_array_equal(output(reply.infer_response, "sum"), [[2, 3, 4, 5]])
    assert "unknown model 'nope'" in by_id["bad"].error_message
    assert by_id["bad"].infer_response.parameters[FINAL].bool_param is True
    # Each request ran once, on one backend.
    served = [b.app.statistics("pair", "2")[0].inference_count for b in (first, second)]
    assert sum(served) == 8, served


async def test_a_stream_request_counts_in_the_gateway_metrics_once(
    start_inference: StartInference, start_gateway: StartGateway, connect: Connect
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend))
    stub = connect(gateway)
    replies = [r async for r in stub.ModelStreamInfer(send([pair_request(id="a")] * 3), timeout=20)]
    assert len(replies) == 3 and not any(r.error_message for r in replies)
    registry = gateway.metrics_registry
    ok = {"model": "pair", "version": "2", "code": "OK", "protocol": "grpc"}

    def counted() -> float:
        return registry.get_sample_value("maas_gateway_requests_total", ok) or 0.0

    await until(lambda: counted() == 3)
