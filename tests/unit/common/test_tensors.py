"""The tensor codec: every datatype both ways, and every malformed input refused."""

from __future__ import annotations

import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.datatypes import DATATYPES, by_name, by_numpy, by_onnx
from services.common.errors import InvalidArgument
from services.common.tensors import decode, encode, encode_bytes_elements

NUMERIC = [d for d in DATATYPES if not d.is_bytes]


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"a", b""], [b"\x00\xff", "\u00e9".encode()]], dtype=object)
    dt = by_name(datatype, tensor="t").numpy
    return (
        (np.arange(6).reshape(2, 3) % 2).astype(dt)
        if dt.kind == "b"
        else np.arange(6, dtype=dt).reshape(2, 3)
    )


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("datatype", [d.name for d in DATATYPES])
def test_round_trip(datatype: str, raw: bool) -> None:
    array = sample(datatype)
    tensor = pb.ModelInferResponse.InferOutputTensor(name="t")
    data = encode(array, tensor, raw=raw)
    assert tensor.datatype == datatype and list(tensor.shape) == list(array.shape)
    forced_raw = datatype == "FP16"  # the protocol has no typed FP16 field
    assert (data is not None) == (raw or forced_raw)
    back = decode(tensor, data)
    assert back.shape == array.shape
    assert [bytes(x) if isinstance(x, bytes) else x for x in back.ravel()] == list(array.ravel())


def test_raw_decode_does_not_copy() -> None:
    raw = np.arange(4, dtype=np.float32).tobytes()
    tensor = pb.ModelInferRequest.InferInputTensor(name="t", datatype="FP32", shape=[4])
    array = decode(tensor, raw)
    assert not array.flags.owndata and not array.flags.writeable


def test_table_is_consistent() -> None:
    for d in DATATYPES:
        assert by_name(d.name, tensor="t") is d
        assert by_onnx(d.onnx) is d
        if not d.is_bytes:
            assert by_numpy(d.numpy) is d
            assert d.byte_size == d.numpy.itemsize
    assert by_numpy(np.dtype(">f4")).name == "FP32"
    assert by_numpy(np.array(["x"]).dtype).name == "BYTES"


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "needle"),
    [
        ("FP32", [2], b"\0" * 7, "7 bytes, expected 8"),
        ("FP32", [-1], b"", "negative dimension"),
        ("FP9", [1], b"\0", "unknown datatype 'FP9'"),
        ("BYTES", [1], b"\x09\0\0\0abc", "declares 9 bytes"),
        ("BYTES", [2], encode_bytes_elements(np.array([b"a"], dtype=object)), "length prefix"),
    ],
)
def test_bad_raw_is_invalid_argument(
    datatype: str, shape: list[int], raw: bytes, needle: str
) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="img", datatype=datatype, shape=shape)
    with pytest.raises(InvalidArgument) as caught:
        decode(tensor, raw)
    assert "'img'" in caught.value.message and needle in caught.value.message


def test_typed_contents_errors() -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="t", datatype="UINT8", shape=[2])
    tensor.contents.uint_contents.extend([1, 300])
    with pytest.raises(InvalidArgument, match="out of range for UINT8"):
        decode(tensor, None)
    fp16 = pb.ModelInferRequest.InferInputTensor(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidArgument, match="'h'.*raw_input_contents"):
        decode(fp16, None)
