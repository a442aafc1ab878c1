"""services.inference.received: the raw contents stay in the received bytes, and the
rest parses to what a full parse gives."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.decoding import MAX_FIELDS, TOO_MANY_FIELDS
from services.common.errors import InvalidArgument
from services.common.tensors import encoded
from services.inference.received import received


def _request(*raws: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="req")
    request.parameters["priority"].int64_param = 3
    for i, raw in enumerate(raws):
        request.inputs.add(name=f"x{i}", datatype="UINT8", shape=[len(raw)])
    request.raw_input_contents.extend(raws)
    request.outputs.add(name="y")
    return request


def _without_raws(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    copy = pb.ModelInferRequest()
    copy.CopyFrom(request)
    del copy.raw_input_contents[:]
    return copy


def test_the_rest_parses_as_a_full_parse_and_the_raws_are_views_in_order() -> None:
    request = _request(b"first", b"", b"third" * 1000)
    data = request.SerializeToString()
    got = received(data)
    assert got.message == _without_raws(request)
    assert [bytes(raw) for raw in got.raws] == [b"first", b"", b"third" * 1000]
    assert all(raw.obj is data for raw in got.raws)  # views, not copies


def test_fields_after_and_between_the_raws_still_count() -> None:
    # Concatenated messages merge: a later version wins, later raws and inputs append.
    first, second = _request(b"a"), pb.ModelInferRequest(model_version="7")
    second.inputs.add(name="late", datatype="UINT8", shape=[1])
    second.raw_input_contents.append(b"b")
    data = first.SerializeToString() + second.SerializeToString()
    full = pb.ModelInferRequest.FromString(data)
    got = received(data)
    assert got.message == _without_raws(full)
    assert [bytes(raw) for raw in got.raws] == list(full.raw_input_contents) == [b"a", b"b"]


def test_a_request_without_raw_contents_is_the_full_parse() -> None:
    request = _request()
    request.inputs.add(name="typed", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
        [1.0, 2.0]
    )
    got = received(request.SerializeToString())
    assert got.message == request
    assert got.raws == ()


def test_a_view_decodes_like_bytes_and_comes_out_aligned() -> None:
    values = np.arange(7, dtype=np.float32)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[7])
    request.raw_input_contents.append(values.tobytes())
    got = received(request.SerializeToString())
    array = encoded(got.message.inputs[0], got.raws[0]).decode()
    np.testing.assert_array_equal(array, values)
    assert array.ctypes.data % 16 == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x3a\x05abc",  # field 7 runs past the end
        b"\x0a\x80",  # a truncated length
        b"\xff",  # a truncated key
    ],
)
def test_bytes_that_are_no_message_are_refused(data: bytes) -> None:
    with pytest.raises((ValueError, DecodeError)):
        received(data)


def test_a_group_is_left_to_protobuf() -> None:
    # The scan stops at a group; protobuf parses it as an unknown field, and the
    # decoder's group check refuses it afterwards, as for a full parse.
    data = _request(b"raw").SerializeToString() + b"\x0b\x0c"
    got = received(data)
    assert [bytes(raw) for raw in got.raws] == [b"raw"]
    assert got.message.model_name == "m"


def test_more_top_level_fields_than_the_cap_are_refused() -> None:
    data = b"\x18\x01" * (MAX_FIELDS + 1)  # field 3 as varints, over and over
    with pytest.raises(InvalidArgument) as caught:
        received(data)
    assert caught.value.message == TOO_MANY_FIELDS


@pytest.mark.parametrize("elements", [[b"ab", b"cd"], [b"a", b"", b"long element"]])
def test_bytes_elements_from_a_view_are_bytes(elements: list[bytes]) -> None:
    raw = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="BYTES", shape=[len(elements)])
    request.raw_input_contents.append(raw)
    got = received(request.SerializeToString())
    array = encoded(got.message.inputs[0], got.raws[0]).decode()
    assert list(array) == elements
    assert all(type(item) is bytes for item in array)
