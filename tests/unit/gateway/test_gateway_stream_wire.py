"""Reading a backend's stream responses in place: the error flag and the inner head."""

from __future__ import annotations

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.gateway import wire


def test_the_inner_head_is_read_without_decoding_the_outputs() -> None:
    inner = pb.ModelInferResponse(model_name="m", model_version="3", id="x")
    inner.raw_output_contents.append(b"\x01" * 4096)
    data = pb.ModelStreamInferResponse(infer_response=inner).SerializeToString()
    assert wire.stream_head(data) == wire.Head("m", "3", "x")
    assert not wire.stream_failed(data)


def test_an_error_response_is_told_apart() -> None:
    data = pb.ModelStreamInferResponse(
        error_message="no", infer_response=pb.ModelInferResponse(id="y")
    ).SerializeToString()
    assert wire.stream_failed(data)
    assert wire.stream_head(data) == wire.Head(id="y")
    assert wire.stream_head(b"") == wire.Head()
