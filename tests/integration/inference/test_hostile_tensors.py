"""Tensors the fuzz suite found crashing the codec, sent to a real inference server.

Each got INTERNAL before the codec checked shapes against numpy's limits and
BYTES counts against the bytes present (tests/fuzz/test_fuzz_regressions.py).
"""

from __future__ import annotations

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc


def _request(model: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("model", "datatype", "shape", "raw", "expected"),
    [
        # 64e9 BYTES elements from a 37-byte request: a 477 GiB np.empty (MemoryError).
        ("dt_bytes", "BYTES", [10**9, 1, 8, 8], b"", "too few for 64000000000 BYTES"),
        ("dt_fp32", "FP32", [1] * 70, b"\x00" * 4, "70 dimensions, expected at most 32"),
        ("dt_uint16", "UINT16", [0, 2**62], b"", "is too large for any array"),
    ],
)
async def test_hostile_shapes_are_invalid_argument(
    channel: grpc.aio.Channel,
    model: str,
    datatype: str,
    shape: list[int],
    raw: bytes,
    expected: str,
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(_request(model, datatype, shape, raw), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (caught.value.details() or "")
