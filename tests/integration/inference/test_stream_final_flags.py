"""Stream responses carry Triton's final flag; a model that answers once keeps one response.

Through a real inference server over the shared `pair` tensor model (not decoupled):
every ModelStreamInfer response says `triton_final_response`, an error too (with the
status for the gateway), and ModelConfig reports no decoupled policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"


def pair_request(id: str, *, empty_final: bool = False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair", id=id)
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
    request.raw_input_contents.extend([np.ones((1, 4), np.float32).tobytes()] * 2)
    if empty_final:
        request.parameters[EMPTY_FINAL].bool_param = True
    return request


async def stream(
    channel: grpc.aio.Channel, requests: list[pb.ModelInferRequest]
) -> list[pb.ModelStreamInferResponse]:
    async def send() -> AsyncIterator[pb.ModelInferRequest]:
        for request in requests:
            yield request

    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    return [r async for r in stub.ModelStreamInfer(send(), timeout=10)]


async def test_each_response_of_a_tensor_model_is_its_final_one(
    channel: grpc.aio.Channel,
) -> None:
    replies = await stream(channel, [pair_request("r1"), pair_request("r2", empty_final=True)])
    # One response each, even where an empty final one was asked for: the model is
    # not decoupled, so its one response is the final one (as Triton answers).
    assert sorted(r.infer_response.id for r in replies) == ["r1", "r2"]
    for reply in replies:
        assert not reply.error_message
        assert reply.infer_response.parameters[FINAL].bool_param is True
        assert [o.name for o in reply.infer_response.outputs] == ["sum", "diff"]


async def test_a_failed_request_ends_with_a_final_error_naming_its_status(
    channel: grpc.aio.Channel,
) -> None:
    bad = pair_request("bad")
    bad.model_name = "nope"
    replies = await stream(channel, [bad, pair_request("ok")])
    by_id = {r.infer_response.id: r for r in replies}
    assert set(by_id) == {"bad", "ok"}
    failed = by_id["bad"].infer_response
    assert "nope" in by_id["bad"].error_message
    assert failed.parameters[FINAL].bool_param is True
    assert failed.parameters["maas_error_status"].string_param == "NOT_FOUND"
    assert not by_id["ok"].error_message


async def test_a_tensor_model_reports_no_decoupled_policy(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    reply = await stub.ModelConfig(pb.ModelConfigRequest(name="pair"), timeout=10)
    assert not reply.config.HasField("model_transaction_policy")
