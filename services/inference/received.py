"""A ModelInferRequest as received: its raw tensor contents left where grpc put them.

Why: parsing the whole message copies every raw_input_contents entry into
protobuf's arena, and reading an entry back copies it again into a bytes object;
for a 63 MB request that was two more 63 MB buffers (fresh pages, which the kernel
zeroes) before a single check ran. Here the top-level fields are read by their
tags (time bounded by their count, services.common.wirefmt), raw_input_contents
(field 7) become memoryviews into the received bytes, and protobuf parses only the
rest (names, shapes, parameters: a few hundred bytes).

The parse is the same message a full parse gives, less field 7: protobuf merges a
message's fields in wire order wherever they lie, and the entries of a repeated
field keep their order. Anything the scan does not take apart (a group, a wire
type no message has) is left to protobuf with the rest, so such bytes fail or pass
as they did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.decoding import MAX_FIELDS, TOO_MANY_FIELDS
from services.common.errors import InvalidArgument
from services.common.wirefmt import LEN, next_field

# ModelInferRequest.raw_input_contents (field 7), length-delimited: its key.
RAW_INPUT_KEY = 7 << 3 | LEN


@dataclass(frozen=True, slots=True)
class Received:
    """The request's fields but raw_input_contents, and those contents, in order."""

    message: pb.ModelInferRequest
    raws: Sequence[memoryview]


def received(data: bytes) -> Received:
    """`data` as a Received; ValueError or protobuf's DecodeError if it is not a
    ModelInferRequest, InvalidArgument past MAX_FIELDS top-level fields."""
    view = memoryview(data)
    rest: list[memoryview] = []
    raws: list[memoryview] = []
    pos, end, count, kept = 0, len(data), 0, 0
    while pos < end:
        count += 1
        if count > MAX_FIELDS:
            raise InvalidArgument(TOO_MANY_FIELDS)
        entry = pos
        try:
            key, start, pos = next_field(view, pos)
        except InvalidArgument as exc:  # a truncated varint: not a message
            raise ValueError(exc.message) from None
        if pos < 0:
            break  # a group, or no wire type at all: protobuf decides
        if pos > end:
            raise ValueError("a field runs past the end of the message")
        if key == RAW_INPUT_KEY:
            rest.append(view[kept:entry])
            raws.append(view[start:pos])
            kept = pos
    if not raws:
        return Received(pb.ModelInferRequest.FromString(data), ())
    rest.append(view[kept:])
    return Received(pb.ModelInferRequest.FromString(b"".join(rest)), tuple(raws))
