"""The wire scan that routes requests without decoding their tensors."""

from __future__ import annotations

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import InvalidArgument
from services.common.wirefmt import encode_varint, read_varint
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
        encoded = encode_varint(value)
        assert read_varint(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff" * 11 + b"\x01"])
def test_truncated_or_overlong_varints_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="truncated or overlong varint"):
        read_varint(data, 0)


# Client requests: read_request bounds the scan and checks what routing relies on.

_PAIR = infer_request("2").SerializeToString()


def test_read_request_reads_what_read_head_reads() -> None:
    assert wire.read_request(_PAIR) == wire.read_head(_PAIR) == wire.Head("pair", "2", "req-7")
    assert wire.read_request(b"") == wire.Head()
    statistics = pb.ModelStatisticsRequest().SerializeToString()
    assert wire.read_request(statistics) == wire.Head()  # "" asks about every model


def test_field_count_is_capped_whatever_the_length() -> None:
    # Issue 11, item 1: 16 Mi one-byte varint fields kept the event loop busy ~10 s.
    padding = b"\x78\x00" * (16 << 20)
    with pytest.raises(InvalidArgument, match=f"at most {wire.MAX_FIELDS} top-level fields"):
        wire.read_request(_PAIR + padding)
    # _PAIR: name, version, id, one parameter, one input, one raw contents.
    at_cap = _PAIR + b"\x78\x00" * (wire.MAX_FIELDS - 6)
    assert wire.read_request(at_cap).name == "pair"
    with pytest.raises(InvalidArgument, match="got more"):
        wire.read_request(at_cap + b"\x78\x00")


def test_long_fields_are_skipped_by_their_length() -> None:
    request = infer_request()
    request.raw_input_contents.append(b"\x78\x00" * (8 << 20))
    assert wire.read_request(request.SerializeToString()).name == "pair"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (wire.string_field(wire.NAME, "othermodel"), "model name"),
        (wire.string_field(wire.NAME, "pair"), "model name"),
        (wire.string_field(wire.VERSION, "1"), "model version"),
    ],
)
def test_a_second_name_or_version_is_refused(extra: bytes, field: str) -> None:
    # Protobuf keeps the last one: a name after the tensors would pass a check of the first.
    with pytest.raises(InvalidArgument, match=f"the {field} .* appears more than once"):
        wire.read_request(_PAIR + extra)
    # A reply (protobuf wrote it) is read last-wins, as protobuf reads it.
    parsed = pb.ModelInferRequest.FromString(_PAIR + extra)
    assert wire.read_head(_PAIR + extra) == wire.Head(
        parsed.model_name, parsed.model_version, "req-7"
    )


def test_a_second_id_is_last_wins_like_protobuf() -> None:
    data = _PAIR + wire.string_field(wire.ID, "other")
    assert wire.read_request(data).id == pb.ModelInferRequest.FromString(data).id == "other"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("digits ", "invalid model name 'digits '"),
        ("dig\0its", r"invalid model name 'dig\\x00its'"),
        ("../../etc/passwd", "invalid model name '../../etc/passwd'"),
        ("_x", "expected a letter or digit"),
        ("é", "ASCII"),
        ("a" * 129, "expected at most 128 characters, got 129"),
        ("a" * 65536, "expected at most 128 characters, got 65536 bytes"),
    ],
)
def test_bad_model_names_are_invalid_arguments_naming_the_rule(name: str, expected: str) -> None:
    data = pb.ModelInferRequest(model_name=name).SerializeToString()
    with pytest.raises(InvalidArgument, match=expected) as caught:
        wire.read_request(data)
    assert len(caught.value.message) < 300  # a long name is echoed truncated


@pytest.mark.parametrize("name", ["digits", "Pair.v2", "9-lives_x", "a" * 128])
def test_model_names_within_the_rule_pass(name: str) -> None:
    assert wire.read_request(pb.ModelReadyRequest(name=name).SerializeToString()).name == name


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1" * 5000, "model version '1111.*too long: expected at most 64 characters"),
        ("1" * 65, "expected at most 64 characters, got 65"),
        ("²", "invalid model version '²': expected a version number in ASCII digits"),
        ("01", "invalid model version '01'"),
        ("١", "invalid model version '١'"),
        ("prod uction", "expected a version number, an alias, 'latest' or empty"),
    ],
)
def test_bad_versions_are_invalid_arguments_naming_the_field(version: str, expected: str) -> None:
    data = pb.ModelInferRequest(model_name="pair", model_version=version).SerializeToString()
    with pytest.raises(InvalidArgument, match=expected):
        wire.read_request(data)


@pytest.mark.parametrize("version", ["", "1", "123456789012345678", "latest", "production"])
def test_version_selectors_pass(version: str) -> None:
    data = pb.ModelInferRequest(model_name="pair", model_version=version).SerializeToString()
    assert wire.read_request(data).version == version


def test_a_refused_name_or_version_keeps_the_request_id() -> None:
    # A stream answers a refused request with its id, so the client knows which one failed.
    data = pb.ModelInferRequest(model_name="a b", id="req-9").SerializeToString()
    with pytest.raises(wire.BadHead) as caught:
        wire.read_request(data)
    assert caught.value.head == wire.Head(id="req-9")
