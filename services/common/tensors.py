"""The one tensor codec between v2 protobuf tensors and numpy arrays.

The same two functions serve request inputs and response outputs, since both
tensor messages carry name, datatype, shape and contents. Raw bytes decode
without a copy (`numpy.frombuffer`); BYTES elements are 4-byte little-endian
length prefixes followed by the bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from services.common.datatypes import DataType, by_name, by_numpy
from services.common.errors import InvalidArgument

_LEN = struct.Struct("<I")
# numpy's own limits: at most 32 dimensions (numpy 1.x; 2.x allows 64), and an
# array whose size in bytes, zero dimensions aside, fits in a signed 64-bit int.
MAX_RANK = 32
_MAX_EXTENT = 2**63 - 1


class TensorMessage(Protocol):
    """InferInputTensor and InferOutputTensor alike."""

    name: str
    datatype: str

    @property
    def shape(self) -> Any: ...

    @property
    def contents(self) -> Any: ...

    def HasField(self, field: str) -> bool: ...  # noqa: N802 - protobuf's name


def element_count(shape: Sequence[int]) -> int:
    """Number of elements of a tensor of `shape`."""
    return math.prod(shape)


def checked_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The shape as a tuple; InvalidArgument for negative dimensions or shapes no array has."""
    dims = tuple(int(d) for d in shape)
    if len(dims) > MAX_RANK:
        raise InvalidArgument(
            f"tensor '{name}': shape has {len(dims)} dimensions, expected at most {MAX_RANK}"
        )
    if any(d < 0 for d in dims):
        raise InvalidArgument(
            f"tensor '{name}': shape {list(dims)} has a negative dimension, expected sizes >= 0"
        )
    if math.prod(max(d, 1) for d in dims) * 8 > _MAX_EXTENT:
        raise InvalidArgument(
            f"tensor '{name}': shape {list(dims)} is too large for any array, "
            f"expected a product of dimensions below {_MAX_EXTENT // 8}"
        )
    return dims


def decode(tensor: TensorMessage, raw: bytes | None) -> np.ndarray:
    """The numpy array a tensor message carries, from `raw` or its typed contents."""
    dtype = by_name(tensor.datatype, tensor=tensor.name)
    shape = checked_shape(tensor.name, tensor.shape)
    count = element_count(shape)
    if raw is not None:
        return _decode_raw(tensor.name, dtype, shape, count, raw)
    return _decode_typed(tensor, dtype, shape, count)


def _decode_raw(
    name: str, dtype: DataType, shape: tuple[int, ...], count: int, raw: bytes
) -> np.ndarray:
    if dtype.is_bytes:
        return decode_bytes_elements(name, raw, count).reshape(shape)
    expected = count * dtype.byte_size
    if len(raw) != expected:
        raise InvalidArgument(
            f"tensor '{name}': raw contents are {len(raw)} bytes, expected {expected} "
            f"({count} {dtype.name} elements of {dtype.byte_size} bytes for shape {list(shape)})"
        )
    return np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)


def _decode_typed(
    tensor: TensorMessage, dtype: DataType, shape: tuple[int, ...], count: int
) -> np.ndarray:
    name = tensor.name
    if dtype.contents_field is None:
        raise InvalidArgument(
            f"tensor '{name}': {dtype.name} has no typed contents field, "
            "expected its data in raw_input_contents"
        )
    values = getattr(tensor.contents, dtype.contents_field)
    if len(values) != count:
        raise InvalidArgument(
            f"tensor '{name}': {dtype.contents_field} has {len(values)} elements, "
            f"expected {count} for shape {list(shape)}"
        )
    if dtype.is_bytes:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    array = np.array(values)
    if dtype.numpy.kind in "iu" and array.size:
        info = np.iinfo(dtype.numpy)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidArgument(
                f"tensor '{name}': value {bad} in {dtype.contents_field} is out of range for "
                f"{dtype.name}, expected {info.min}..{info.max}"
            )
    return array.astype(dtype.numpy, copy=False).reshape(shape)


def decode_bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    """BYTES elements from length-prefixed raw contents, as a 1-D object array."""
    view = memoryview(raw)
    if count * _LEN.size > len(view):
        # Checked before allocating: a tiny request must not size a huge array.
        raise InvalidArgument(
            f"tensor '{name}': raw contents are {len(view)} bytes, too few for {count} BYTES "
            f"elements, expected at least {count * _LEN.size} (a 4-byte length prefix each)"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if len(view) - offset < _LEN.size:
            raise InvalidArgument(
                f"tensor '{name}': BYTES element {i} needs a 4-byte length prefix at offset "
                f"{offset}, got {len(view) - offset} bytes, expected {count} elements"
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += _LEN.size
        if len(view) - offset < length:
            raise InvalidArgument(
                f"tensor '{name}': BYTES element {i} declares {length} bytes at offset "
                f"{offset}, got only {len(view) - offset}"
            )
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidArgument(
            f"tensor '{name}': raw contents have {len(view) - offset} bytes after the "
            f"{count} BYTES elements its shape holds, expected none"
        )
    return out


def encode_bytes_elements(array: np.ndarray) -> bytes:
    """Length-prefixed raw contents of a BYTES (object, str or bytes) array."""
    parts: list[bytes] = []
    for item in array.ravel():
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode(array: np.ndarray, tensor: TensorMessage, *, raw: bool) -> bytes | None:
    """Fill `tensor`'s datatype, shape and, unless raw, contents; return raw bytes.

    FP16 has no typed contents field in the protocol, so it always goes raw.
    """
    dtype = by_numpy(array.dtype)
    tensor.datatype = dtype.name
    tensor.shape[:] = array.shape
    if raw or dtype.contents_field is None:
        if dtype.is_bytes:
            return encode_bytes_elements(array)
        return np.ascontiguousarray(array, dtype=dtype.numpy).tobytes()
    field = getattr(tensor.contents, dtype.contents_field)
    if dtype.is_bytes:
        field.extend(
            item.encode() if isinstance(item, str) else bytes(item) for item in array.ravel()
        )
    else:
        field.extend(array.ravel().tolist())
    return None
