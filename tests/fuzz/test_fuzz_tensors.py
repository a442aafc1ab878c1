"""Fuzz tensor decoding and the BYTES codec: client tensors reach them on inference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common import tensors
from services.common.datatypes import DATATYPES, by_name
from services.common.errors import InvalidArgument
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import DATATYPE_NAMES, mutated

pytestmark = pytest.mark.fuzz_target
Tensor = pb.ModelInferRequest.InferInputTensor

# Typed-contents fields and the values protobuf lets each hold.
_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}
_DIM = st.one_of(
    st.integers(0, 6),
    st.integers(-3, 3),
    st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)


@st.composite
def input_tensors(draw: st.DrawFn) -> tuple[Tensor, bytes | None]:
    """A tensor message with any datatype, shape and contents, raw or typed."""
    datatype = draw(st.one_of(st.sampled_from(DATATYPE_NAMES), st.text(max_size=6)))
    shape = draw(st.lists(_DIM, max_size=draw(st.sampled_from([4, 4, 4, 80]))))
    tensor = Tensor(name=draw(st.text(max_size=6)), datatype=datatype, shape=shape)
    if draw(st.booleans()):
        for field in draw(st.lists(st.sampled_from(sorted(_FIELDS)), max_size=2, unique=True)):
            getattr(tensor.contents, field).extend(draw(st.lists(_FIELDS[field], max_size=12)))
        return tensor, None
    known = datatype in DATATYPE_NAMES
    size = by_name(datatype, tensor="").byte_size if known else 1
    count = math.prod(shape) if all(0 <= d < 64 for d in shape) else 0
    count = count if count <= 256 else 0
    exact = st.binary(min_size=count * size, max_size=count * size) if size else st.nothing()
    packed = st.lists(st.binary(max_size=6), min_size=count, max_size=count).map(
        lambda items: b"".join(len(i).to_bytes(4, "little") + i for i in items)
    )
    raw = draw(st.one_of(st.binary(max_size=64), exact, mutated(packed)))
    return tensor, raw


def _expected(tensor: Tensor, raw: bytes | None) -> np.ndarray | None:
    """What numpy itself makes of a well-formed tensor, or None when it is not one."""
    if tensor.datatype not in DATATYPE_NAMES or any(d < 0 for d in tensor.shape):
        return None
    dtype = by_name(tensor.datatype, tensor="")
    if dtype.is_bytes or len(tensor.shape) > tensors.MAX_RANK or math.prod(tensor.shape) > 1 << 20:
        return None
    if math.prod(max(d, 1) for d in tensor.shape) * 8 > 2**63 - 1:
        return None  # representable for 1-byte types, but refused for every type alike
    if raw is not None:
        if len(raw) != math.prod(tensor.shape) * dtype.byte_size:
            return None
        return np.frombuffer(raw, dtype=dtype.numpy).reshape(tuple(tensor.shape))
    if dtype.contents_field is None:
        return None
    values = list(getattr(tensor.contents, dtype.contents_field))
    if len(values) != math.prod(tensor.shape):
        return None
    if dtype.numpy.kind in "iu":
        info = np.iinfo(dtype.numpy)
        if any(not info.min <= v <= info.max for v in values):
            return None
    return np.array(values, dtype=dtype.numpy).reshape(tuple(tensor.shape))


def check_decode(case: tuple[Tensor, bytes | None]) -> None:
    """A decoded array that matches numpy's own reading, or InvalidArgument; nothing else."""
    tensor, raw = case
    try:
        array = tensors.decode(tensor, raw)
    except InvalidArgument:
        assert _expected(tensor, raw) is None
        return
    assert array.shape == tuple(tensor.shape)
    expected = _expected(tensor, raw)
    if expected is not None:
        assert array.dtype == expected.dtype
        np.testing.assert_array_equal(array, expected)


def check_bytes_elements(case: tuple[bytes, int]) -> None:
    """Any raw contents and element count: elements that re-encode to the same bytes."""
    raw, count = case
    try:
        elements = tensors.decode_bytes_elements("t", raw, count)
    except InvalidArgument:
        return
    assert elements.shape == (count,)
    assert tensors.encode_bytes_elements(elements) == raw


def _arrays() -> st.SearchStrategy[np.ndarray]:
    numeric = st.sampled_from([d.numpy for d in DATATYPES if not d.is_bytes]).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0))
    )
    strings = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4).flatmap(
        lambda shape: st.lists(
            st.one_of(st.binary(max_size=8), st.text(max_size=8)),
            min_size=math.prod(shape),
            max_size=math.prod(shape),
        ).map(lambda items: _object_array(items, shape))
    )
    return st.one_of(numeric, strings)


def _object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def check_round_trip(case: tuple[np.ndarray, bool]) -> None:
    """encode then decode gives the array back, raw or typed."""
    array, raw = case
    tensor = Tensor(name="t")
    data = tensors.encode(array, tensor, raw=raw)
    back = tensors.decode(tensor, data)
    assert back.shape == array.shape
    if array.dtype == object:
        want = [i.encode() if isinstance(i, str) else i for i in array.ravel()]
        assert list(back.ravel()) == want
    else:
        assert back.dtype == array.dtype.newbyteorder("=") or array.dtype.itemsize == 1
        np.testing.assert_array_equal(back, array)


def test_fuzz_tensor_decode() -> None:
    fuzz("tensors.decode", input_tensors(), check_decode)


@st.composite
def same_length_elements(draw: st.DrawFn) -> tuple[bytes, int]:
    """Raw contents whose elements all have one length (the strided numpy path), with
    the right count or one near it, sometimes with a byte changed."""
    length, count = draw(st.integers(0, 5)), draw(st.integers(1, 8))
    item = st.binary(min_size=length, max_size=length)
    raw = draw(
        mutated(
            st.lists(item, min_size=count, max_size=count).map(
                lambda items: b"".join(len(i).to_bytes(4, "little") + i for i in items)
            )
        )
    )
    return raw, count + draw(st.sampled_from([0, 0, 0, -1, 1]))


def test_fuzz_bytes_codec() -> None:
    cases = st.one_of(
        st.tuples(
            st.one_of(st.binary(max_size=64), mutated(st.binary(max_size=64))),
            st.one_of(st.integers(0, 8), st.integers(0, 2**40)),
        ),
        same_length_elements(),
    )
    fuzz("BYTES codec", cases, check_bytes_elements, batch=500)


def test_fuzz_tensor_round_trip() -> None:
    fuzz("tensors encode/decode round trip", st.tuples(_arrays(), st.booleans()), check_round_trip)
