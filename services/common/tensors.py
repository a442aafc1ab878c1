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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.common.datatypes import DATATYPES, DataType, by_name, by_numpy
from services.common.errors import InvalidArgument
from services.common.names import echo

# A tensor's raw contents: bytes, or a view into the message they came in.
Raw = bytes | memoryview

_LEN = struct.Struct("<I")
# The alignment of a bytes object's data (and of numpy's own arrays) on 64-bit CPython.
ALIGNMENT = 16
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
            f"tensor {echo(name)}: shape has {len(dims)} dimensions, expected at most {MAX_RANK}"
        )
    if any(d < 0 for d in dims):
        raise InvalidArgument(
            f"tensor {echo(name)}: shape {list(dims)} has a negative dimension, expected sizes >= 0"
        )
    if math.prod(max(d, 1) for d in dims) * 8 > _MAX_EXTENT:
        raise InvalidArgument(
            f"tensor {echo(name)}: shape {list(dims)} is too large for any array, "
            f"expected a product of dimensions below {_MAX_EXTENT // 8}"
        )
    return dims


@dataclass(frozen=True)
class Encoded:
    """A tensor as it came, checked against the data it carries but not decoded yet.

    Why: decoding allocates per element (BYTES: a Python object each), so a server
    first checks the header against the model's signature and its limits, and
    decodes only a tensor that passed; `encoded` allocates nothing.
    """

    name: str
    datatype: DataType
    shape: tuple[int, ...]
    count: int
    raw: Raw | None
    # The message, for its typed contents; None with raw contents.
    message: TensorMessage | None

    def decode(self) -> np.ndarray:
        """The numpy array this tensor carries."""
        if self.raw is not None:
            if self.datatype.is_bytes:
                return decode_bytes_elements(self.name, self.raw, self.count).reshape(self.shape)
            array = np.frombuffer(self.raw, dtype=self.datatype.numpy)
            if array.ctypes.data % ALIGNMENT:
                # A view into the message at whatever offset the field had: copied to
                # where a bytes object's data would be, since ONNX Runtime's kernels
                # can give other low bits for unaligned inputs.
                array = array.copy()
            return array.reshape(self.shape)
        assert self.message is not None
        return _decode_typed(self.message, self.datatype, self.shape, self.count)


def encoded(tensor: TensorMessage, raw: Raw | None) -> Encoded:
    """`tensor` with its datatype and shape checked against the data present, without
    allocating anything in proportion to the shape; InvalidArgument naming the tensor."""
    name = tensor.name
    dtype = _datatype(name, tensor.datatype)
    shape = checked_shape(name, tensor.shape)
    count = element_count(shape)
    if raw is not None:
        _check_raw_size(name, dtype, shape, count, len(raw))
        return Encoded(name, dtype, shape, count, raw, None)
    if dtype.contents_field is None:
        raise InvalidArgument(
            f"tensor {echo(name)}: {dtype.name} has no typed contents field, "
            "expected its data in raw_input_contents"
        )
    values = len(getattr(tensor.contents, dtype.contents_field))
    if values != count:
        raise InvalidArgument(
            f"tensor {echo(name)}: {dtype.contents_field} has {values} elements, "
            f"expected {count} for shape {list(shape)}"
        )
    return Encoded(name, dtype, shape, count, None, tensor)


def _datatype(name: str, datatype: str) -> DataType:
    try:
        return by_name(datatype, tensor=name)
    except InvalidArgument:
        known = ", ".join(d.name for d in DATATYPES)
        raise InvalidArgument(
            f"tensor {echo(name)}: unknown datatype {echo(datatype)}, expected one of {known}"
        ) from None


def decode(tensor: TensorMessage, raw: Raw | None) -> np.ndarray:
    """The numpy array a tensor message carries, from `raw` or its typed contents."""
    return encoded(tensor, raw).decode()


def _check_raw_size(
    name: str, dtype: DataType, shape: tuple[int, ...], count: int, size: int
) -> None:
    if dtype.is_bytes:
        _check_bytes_size(name, count, size)
        return
    expected = count * dtype.byte_size
    if size != expected:
        raise InvalidArgument(
            f"tensor {echo(name)}: raw contents are {size} bytes, expected {expected} "
            f"({count} {dtype.name} elements of {dtype.byte_size} bytes for shape {list(shape)})"
        )


def _check_bytes_size(name: str, count: int, size: int) -> None:
    if count * _LEN.size > size:
        # Checked before allocating: a tiny request must not size a huge array.
        raise InvalidArgument(
            f"tensor {echo(name)}: raw contents are {size} bytes, too few for {count} BYTES "
            f"elements, expected at least {count * _LEN.size} (a 4-byte length prefix each)"
        )


def _decode_typed(
    tensor: TensorMessage, dtype: DataType, shape: tuple[int, ...], count: int
) -> np.ndarray:
    assert dtype.contents_field is not None
    values = getattr(tensor.contents, dtype.contents_field)
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
                f"tensor {echo(tensor.name)}: value {bad} in {dtype.contents_field} is out of "
                f"range for {dtype.name}, expected {info.min}..{info.max}"
            )
    return array.astype(dtype.numpy, copy=False).reshape(shape)


def decode_bytes_elements(name: str, raw: Raw, count: int) -> np.ndarray:
    """BYTES elements from length-prefixed raw contents, as a 1-D object array.

    Elements that all have the same length (empty ones, fixed-size keys) are read
    with strided numpy views, not one Python step each.
    """
    size = len(raw)
    _check_bytes_size(name, count, size)
    if count and size % count == 0:
        stride = size // count
        prefixes = np.ndarray((count,), dtype="<u4", buffer=raw, strides=(stride,))
        if (prefixes == stride - _LEN.size).all():
            return _same_length(raw, count, stride - _LEN.size)
    return _each_length(name, raw, count)


def _same_length(raw: Raw, count: int, length: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    if length == 0:
        out[:] = b""
        return out
    items = np.ndarray(
        (count,), dtype=f"V{length}", buffer=raw, offset=_LEN.size, strides=(length + _LEN.size,)
    )
    out[:] = items.tolist()
    return out


def _each_length(name: str, raw: Raw, count: int) -> np.ndarray:
    view = memoryview(raw)
    size = len(view)
    unpack = _LEN.unpack_from
    items: list[bytes] = [b""] * count
    offset = 0
    try:
        for i in range(count):
            (length,) = unpack(view, offset)
            start = offset + _LEN.size
            offset = start + length
            if offset > size:
                raise InvalidArgument(
                    f"tensor {echo(name)}: BYTES element {i} declares {length} bytes at offset "
                    f"{start}, got only {size - start}"
                )
            items[i] = bytes(view[start:offset])
    except struct.error:
        raise InvalidArgument(
            f"tensor {echo(name)}: BYTES element {i} needs a 4-byte length prefix at offset "
            f"{offset}, got {size - offset} bytes, expected {count} elements"
        ) from None
    if offset != size:
        raise InvalidArgument(
            f"tensor {echo(name)}: raw contents have {size - offset} bytes after the "
            f"{count} BYTES elements its shape holds, expected none"
        )
    out = np.empty(count, dtype=object)
    out[:] = items
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
