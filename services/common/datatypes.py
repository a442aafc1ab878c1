"""The one datatype table: v2 name, numpy dtype, typed-contents field, byte size.

Used for inputs and outputs, by servers and by clients. Raw contents are
little-endian, as the v2 protocol specifies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class DataType:
    """One v2 datatype and its equivalents elsewhere."""

    name: str
    numpy: np.dtype
    # InferTensorContents field, or None where the protocol has none (FP16).
    contents_field: str | None
    # Bytes per element; 0 for BYTES, whose elements are length-prefixed.
    byte_size: int
    triton: str
    onnx: str

    @property
    def is_bytes(self) -> bool:
        """True for BYTES, whose elements are variable-length."""
        return self.byte_size == 0


def _dt(name: str, np_type: str, field: str | None, triton: str, onnx: str) -> DataType:
    dtype = np.dtype(np_type)
    size = 0 if dtype.kind == "O" else dtype.itemsize
    return DataType(name, dtype, field, size, triton, onnx)


DATATYPES: tuple[DataType, ...] = (
    _dt("BOOL", "|b1", "bool_contents", "TYPE_BOOL", "tensor(bool)"),
    _dt("UINT8", "|u1", "uint_contents", "TYPE_UINT8", "tensor(uint8)"),
    _dt("UINT16", "<u2", "uint_contents", "TYPE_UINT16", "tensor(uint16)"),
    _dt("UINT32", "<u4", "uint_contents", "TYPE_UINT32", "tensor(uint32)"),
    _dt("UINT64", "<u8", "uint64_contents", "TYPE_UINT64", "tensor(uint64)"),
    _dt("INT8", "|i1", "int_contents", "TYPE_INT8", "tensor(int8)"),
    _dt("INT16", "<i2", "int_contents", "TYPE_INT16", "tensor(int16)"),
    _dt("INT32", "<i4", "int_contents", "TYPE_INT32", "tensor(int32)"),
    _dt("INT64", "<i8", "int64_contents", "TYPE_INT64", "tensor(int64)"),
    _dt("FP16", "<f2", None, "TYPE_FP16", "tensor(float16)"),
    _dt("FP32", "<f4", "fp32_contents", "TYPE_FP32", "tensor(float)"),
    _dt("FP64", "<f8", "fp64_contents", "TYPE_FP64", "tensor(double)"),
    _dt("BYTES", "O", "bytes_contents", "TYPE_STRING", "tensor(string)"),
)

_BY_NAME = {d.name: d for d in DATATYPES}
_BY_ONNX = {d.onnx: d for d in DATATYPES}
_BY_NUMPY = {d.numpy.newbyteorder("=") if d.byte_size > 1 else d.numpy: d for d in DATATYPES}


def by_name(name: str, *, tensor: str) -> DataType:
    """The datatype called `name` in the v2 protocol; InvalidArgument if none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(d.name for d in DATATYPES)
        raise InvalidArgument(
            f"tensor '{tensor}': unknown datatype '{name}', expected one of {known}"
        ) from None


def by_onnx(onnx_type: str) -> DataType | None:
    """The datatype of an ONNX Runtime type string such as 'tensor(float)'."""
    return _BY_ONNX.get(onnx_type)


def by_numpy(dtype: np.dtype) -> DataType:
    """The datatype of a numpy dtype; str and bytes arrays are BYTES."""
    if dtype.kind in ("O", "U", "S"):
        return _BY_NAME["BYTES"]
    native = dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype
    try:
        return _BY_NUMPY[native]
    except KeyError:
        raise InvalidArgument(f"numpy dtype {dtype} has no v2 datatype") from None
