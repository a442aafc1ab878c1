"""The wire scan that routes requests without decoding their tensors."""

from __future__ import annotations

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import InvalidArgument
from services.gateway import wire


def infer_request(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="pair", model_version=version, id="req-7")
    request.parameters["priority"].int64_param = 3
    tensor = request.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    tensor.parameters["x"].double_param = 1.5  # a fixed64 inside a nested message
    request.raw_input_contents.append(b"\x00" * 16)
    return request


def test_read_head_finds_name_version_and_id() -> None:
    data = infer_request("production").SerializeToString()
    assert wire.read_head(data) == wire.Head("pair", "production", "req-7")
    assert wire.read_head(b"") == wire.Head()


@pytest.mark.parametrize(
    "message",
    [
        pb.ModelMetadataRequest(name="m", version="2"),
        pb.ModelReadyRequest(name="m", version="2"),
        pb.ModelConfigRequest(name="m", version="2"),
        pb.ModelStatisticsRequest(name="m", version="2"),
        pb.ModelInferResponse(model_name="m", model_version="2"),
    ],
)
def test_every_routed_message_keeps_name_and_version_in_fields_1_and_2(message: object) -> None:
    head = wire.read_head(message.SerializeToString())  # type: ignore[attr-defined]
    assert (head.name, head.version) == ("m", "2")


def test_appended_version_wins_and_the_rest_is_untouched() -> None:
    original = infer_request("production")
    rewritten = pb.ModelInferRequest.FromString(
        wire.with_version(original.SerializeToString(), "12")
    )
    assert rewritten.model_version == "12"
    rewritten.model_version = "production"
    assert rewritten == original


def test_stream_response_wraps_the_infer_response() -> None:
    response = pb.ModelInferResponse(model_name="pair", model_version="3", id="x")
    wrapped = wire.wrap_stream_response(response.SerializeToString())
    parsed = pb.ModelStreamInferResponse.FromString(wrapped)
    assert parsed.infer_response == response and not parsed.error_message


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05pa",  # a string longer than what is left
        b"\x0a",  # a key with no length
        b"\x08\xff\xff",  # a truncated varint
        b"\x0b",  # wire type 3 (groups) is not used by these messages
        b"\x0a\x02\xff\xfe",  # not UTF-8
    ],
)
def test_malformed_requests_are_invalid_arguments(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="malformed request"):
        wire.read_head(data)


def test_varints_round_trip() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        encoded = wire.encode_varint(value)
        assert wire._varint(encoded, 0) == (value, len(encoded))
