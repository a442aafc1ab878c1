"""Fuzz the gateway's wire reader: the bytes every client sends reach it first."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import InvalidArgument
from services.gateway import wire
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import client_bytes, infer_requests

pytestmark = pytest.mark.fuzz_target


def _parsed(data: bytes) -> pb.ModelInferRequest | None:
    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return None


def check_any_bytes(data: bytes) -> None:
    """Only InvalidArgument, and where protobuf parses too, the same name, version and id;
    the same for the request reader (check_request)."""
    check_request(data)
    try:
        head = wire.read_head(data)
    except InvalidArgument as exc:
        assert exc.message.startswith("malformed request"), exc.message
        return
    parsed = _parsed(data)
    if parsed is not None:
        assert head == wire.Head(parsed.model_name, parsed.model_version, parsed.id)


def check_request(data: bytes) -> None:
    """A client's request: only InvalidArgument with a short message, and what passes
    reads as protobuf reads it (so no later field can change what was checked)."""
    try:
        head = wire.read_request(data)
    except InvalidArgument as exc:
        assert len(exc.message) < 300, exc.message
        return
    parsed = _parsed(data)
    if parsed is not None:
        assert head == wire.Head(parsed.model_name, parsed.model_version, parsed.id)


def check_valid(case: tuple[list[pb.ModelInferRequest], str, bytes]) -> None:
    """Valid messages, alone or concatenated (a protobuf merge): the same head as protobuf."""
    requests, version, answer = case
    data = b"".join(r.SerializeToString() for r in requests)
    parsed = pb.ModelInferRequest.FromString(data)
    assert wire.read_head(data) == wire.Head(parsed.model_name, parsed.model_version, parsed.id)

    rewritten = pb.ModelInferRequest.FromString(wire.with_version(data, version))
    assert rewritten.model_version == version
    assert wire.read_head(wire.with_version(data, version)).version == version
    rewritten.model_version = parsed.model_version
    assert rewritten == parsed

    response = pb.ModelInferResponse(model_name=parsed.model_name, id=parsed.id)
    response.raw_output_contents.append(answer)
    wrapped = pb.ModelStreamInferResponse.FromString(
        wire.wrap_stream_response(response.SerializeToString())
    )
    assert wrapped.infer_response == response and not wrapped.error_message


def test_fuzz_wire_read_head_any_bytes() -> None:
    fuzz("wire.read_head (any bytes)", client_bytes(), check_any_bytes, batch=500)


def test_fuzz_wire_valid_messages() -> None:
    cases = st.tuples(
        st.lists(infer_requests(), min_size=1, max_size=3), st.text(max_size=12), st.binary()
    )
    fuzz("wire (valid messages)", cases, check_valid)


_DIGITS = pb.ModelInferRequest(model_name="digits").SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        _DIGITS + b"\x78\x00" * 4096,  # issue 11: a long run of tiny fields
        _DIGITS + wire.string_field(wire.NAME, "othermodel"),  # a second name, after the rest
        pb.ModelInferRequest(model_name="m", model_version="1" * 5000).SerializeToString(),
        b"\xff\xff\xff",  # an undecodable message
        b"\x0b\x0c",  # a group (wire type 3)
    ],
)
def test_hostile_client_inputs(data: bytes) -> None:
    # The inputs issue 11's hostile clients sent, as seeds beside the random ones.
    check_any_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        _DIGITS + b"\x78\x00" * (16 << 20),  # issue 11, item 1: the 32 MB padding
        _DIGITS + b"\x78\x00" * 4096,
        _DIGITS + wire.string_field(wire.NAME, "othermodel"),  # a second name: refused
        _DIGITS + wire.string_field(wire.VERSION, "1") * 2,  # a second version: refused
        pb.ModelInferRequest(model_name="m", model_version="1" * 5000).SerializeToString(),
        pb.ModelInferRequest(model_name="m", model_version="\u0661").SerializeToString(),
        pb.ModelInferRequest(model_name="dig\0its").SerializeToString(),
        pb.ModelInferRequest(model_name="../../etc/passwd").SerializeToString(),
        pb.ModelInferRequest(model_name="n" * 65536).SerializeToString(),
        b"\xff\xff\xff",
        b"\x0b\x0c",
    ],
)
def test_hostile_client_requests(data: bytes) -> None:
    # The same inputs against the request reader the servicer uses.
    with pytest.raises(InvalidArgument):
        wire.read_request(data)
    check_request(data)
