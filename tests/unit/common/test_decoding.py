"""Request decoding in maas's own code: groups and field counts read from the wire in
bounded time, and a log line that a flood of undecodable requests cannot multiply
(issue B, items 1, 11 and 16)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.decoding import (
    GROUPS,
    MAX_FIELDS,
    UNDECODABLE,
    DecodedStream,
    Decoder,
    top_level_groups,
)
from services.common.errors import InvalidArgument
from services.common.ratelog import Throttled

GROUP = bytes([9 << 3 | 3, 8, 1, 9 << 3 | 4])  # field 9 as a group holding a varint


def field(number: int, data: bytes) -> bytes:
    return bytes([number << 3 | 2, len(data)]) + data


def test_groups_are_found_among_the_top_level_fields_as_the_gateway_finds_them() -> None:
    plain = pb.ModelInferRequest(model_name="m", id="7")
    plain.inputs.add(name="x", shape=[1, 2]).parameters["p"].bool_param = True
    plain.raw_input_contents.append(b"\x0b" * 100)  # a group key inside a length: data
    data = plain.SerializeToString()
    assert not top_level_groups(data)
    assert top_level_groups(data + GROUP) and top_level_groups(GROUP + data)
    # Inside a tensor it is one of the tensor's unknown fields, as on the gateway,
    # which reads only the top level: both ignore it.
    tensor = pb.ModelInferRequest.InferInputTensor(name="x").SerializeToString() + GROUP
    assert not top_level_groups(data + field(5, tensor))


def test_the_field_count_is_capped_before_any_object_per_field() -> None:
    head = pb.ModelInferRequest(model_name="m").SerializeToString()  # one field
    assert not top_level_groups(head + b"\x78\x00" * (MAX_FIELDS - 1))
    with pytest.raises(InvalidArgument, match="more than 4096 top-level fields"):
        top_level_groups(head + b"\x78\x00" * MAX_FIELDS)
    with pytest.raises(InvalidArgument, match="more than 4096 top-level fields"):
        top_level_groups(head + b"\x78\x00" * (16 << 20))  # 32 MB: stopped at once


def test_decoder_refuses_with_fixed_messages_and_logs_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = Throttled(logging.getLogger("test.decoding"), interval=10.0, clock=lambda: now[0])
    decode = Decoder(pb.ModelInferRequest.FromString, "/m", log)
    caplog.set_level(logging.WARNING, "test.decoding")
    for data, message in ((b"\xff\xff\xff", UNDECODABLE), (GROUP, GROUPS)) * 3:
        with pytest.raises(InvalidArgument) as caught:
            decode(data)
        assert caught.value.message == message
    assert len(caplog.records) == 1 and log.held == 5
    now[0] = 10.0
    with pytest.raises(InvalidArgument):
        decode(b"\xff")
    assert len(caplog.records) == 2 and "5 more" in caplog.records[1].getMessage()
    assert decode(b"\x0a\x01m").model_name == "m"


async def test_a_decoded_stream_reads_on_past_a_bad_message() -> None:
    async def messages() -> AsyncIterator[bytes]:
        for data in (b"\x0a\x01a", b"\xff\xff\xff", b"\x0a\x01b"):
            yield data

    log = Throttled(logging.getLogger("test.decoding"))
    stream = DecodedStream(messages(), Decoder(pb.ModelInferRequest.FromString, "/m", log))
    assert (await anext(stream)).model_name == "a"
    with pytest.raises(InvalidArgument):
        await anext(stream)
    assert (await anext(stream)).model_name == "b"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
