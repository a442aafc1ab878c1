"""Request decoding in maas's own code: groups found at any depth, and a log line that a
flood of undecodable requests cannot multiply (issue B, items 11 and 16)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.decoding import GROUPS, UNDECODABLE, DecodedStream, Decoder, has_groups
from services.common.errors import InvalidArgument
from services.common.ratelog import Throttled

GROUP = bytes([9 << 3 | 3, 8, 1, 9 << 3 | 4])  # field 9 as a group holding a varint


def field(number: int, data: bytes) -> bytes:
    return bytes([number << 3 | 2, len(data)]) + data


def test_groups_are_found_at_the_top_in_tensors_and_in_map_values() -> None:
    plain = pb.ModelInferRequest(model_name="m")
    plain.inputs.add(name="x").parameters["p"].bool_param = True
    assert not has_groups(plain)
    data = plain.SerializeToString()
    tensor = pb.ModelInferRequest.InferInputTensor(name="x").SerializeToString() + GROUP
    entry = field(1, b"k") + field(2, GROUP)  # parameters map entry: key, InferParameter
    for hostile in (data + GROUP, data + field(5, tensor), data + field(4, entry)):
        assert has_groups(pb.ModelInferRequest.FromString(hostile))


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
