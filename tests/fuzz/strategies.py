"""Hypothesis strategies shared by the fuzz targets: protobuf wire bytes and mutations."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.datatypes import DATATYPES
from services.common.wirefmt import encode_varint

DATATYPE_NAMES = [d.name for d in DATATYPES]
INT64 = st.integers(-(2**63), 2**63 - 1)


def _parameter(draw: st.DrawFn, param: Any) -> None:
    kind = draw(st.sampled_from(["bool", "int64", "string", "double", "uint64"]))
    if kind == "bool":
        param.bool_param = draw(st.booleans())
    elif kind == "int64":
        param.int64_param = draw(INT64)
    elif kind == "string":
        param.string_param = draw(st.text(max_size=20))
    elif kind == "double":
        param.double_param = draw(st.floats())
    else:
        param.uint64_param = draw(st.integers(0, 2**64 - 1))


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Valid ModelInferRequests: names, parameters, tensors and raw contents."""
    request = pb.ModelInferRequest(
        model_name=draw(st.text(max_size=40)),
        model_version=draw(st.text(max_size=12)),
        id=draw(st.text(max_size=20)),
    )
    for key in draw(st.lists(st.text(max_size=8), max_size=3)):
        _parameter(draw, request.parameters[key])
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.text(max_size=8)),
            datatype=draw(st.sampled_from(DATATYPE_NAMES)),
            shape=draw(st.lists(INT64, max_size=4)),
        )
        tensor.contents.int_contents.extend(
            draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4))
        )
        tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
        for key in draw(st.lists(st.text(max_size=8), max_size=2)):
            _parameter(draw, tensor.parameters[key])
    for _ in range(draw(st.integers(0, 2))):
        request.outputs.add(name=draw(st.text(max_size=8)))
    request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=64), max_size=3)))
    return request


@st.composite
def wire_fields(draw: st.DrawFn) -> bytes:
    """A sequence of protobuf fields of any number and wire type, not always well formed."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        number = draw(st.one_of(st.integers(0, 6), st.integers(0, 2**29)))
        kind = draw(st.integers(0, 7))
        out += encode_varint(number << 3 | kind)
        if kind == 0:
            out += encode_varint(draw(st.integers(0, 2**64 - 1)))
        elif kind == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif kind == 2:
            payload = draw(st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=12)))
            declared = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**64 - 1)))
            out += encode_varint(declared) + payload
        elif kind == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        else:
            out += draw(st.binary(max_size=4))
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """`base` bytes after a few byte-level mutations: flip, insert, delete, truncate, repeat."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "repeat" and pos < len(data):
            chunk = data[pos : pos + draw(st.integers(1, 16))]
            data[pos:pos] = chunk * draw(st.integers(1, 64))
    return bytes(data)


def client_bytes() -> st.SearchStrategy[bytes]:
    """Bytes a hostile client could send: random, field soup, or mutated valid messages."""
    valid = infer_requests().map(lambda r: r.SerializeToString())
    return st.one_of(st.binary(max_size=256), wire_fields(), mutated(valid), mutated(wire_fields()))
