"""JSON `data` of a REST infer input, packed as the raw contents of its datatype.

Strict where a cast would change values: text or booleans for numbers, fractions or
out-of-range values for integers, anything but true/false for BOOL, anything but
strings for BYTES. Each refusal names the tensor, what it expected and what it got.
"""

from __future__ import annotations

import numpy as np

from services.common.datatypes import DataType
from services.common.errors import InvalidArgument
from services.common.names import echo
from services.common.tensors import encode_bytes_elements


def kind(value: object) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), "a value")


def pack(data: object, name: str, dtype: DataType, shape: tuple[int, ...], count: int) -> bytes:
    """JSON `data` (row-major, flat or nested) as raw contents of `dtype`."""
    label = echo(name)
    array = _array(data, label, object if dtype.is_bytes else None)
    if array.size != count:
        raise InvalidArgument(
            f"input {label}: 'data' has {array.size} elements, expected {count} for shape "
            f"{list(shape)}"
        )
    if dtype.is_bytes:
        return _pack_bytes(array, label)
    if dtype.numpy.kind in "iu" and array.dtype.kind in "fO":
        # numpy reads ints beyond int64 mixed with negative ones as float64 (or objects):
        # the values are read again one by one, so none is rounded.
        array = _integers(_array(data, label, object).ravel(), label, dtype)
    return _cast(array, label, dtype).tobytes()


def _array(data: object, label: str, dtype: type | None) -> np.ndarray:
    try:
        return np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidArgument(
            f"input {label}: 'data' is not a list of values of one shape (ragged, or nested "
            "too deep), expected row-major values, flat or nested"
        ) from None


def _pack_bytes(array: np.ndarray, label: str) -> bytes:
    flat = array.ravel()
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidArgument(
                f"input {label}: BYTES element {i} is {kind(item)}, expected a string"
            )
    return encode_bytes_elements(flat)


def _integers(flat: np.ndarray, label: str, dtype: DataType) -> np.ndarray:
    values = flat.tolist()
    for i, item in enumerate(values):
        if not isinstance(item, int) or isinstance(item, bool):
            raise InvalidArgument(
                f"input {label}: element {i} of 'data' is {kind(item)}, expected an integer "
                f"for {dtype.name}"
            )
    _check_range(min(values), max(values), label, dtype)
    return np.array(values, dtype=dtype.numpy)


def _check_range(low: int, high: int, label: str, dtype: DataType) -> None:
    info = np.iinfo(dtype.numpy)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidArgument(
            f"input {label}: value {bad} is out of range for {dtype.name}, expected "
            f"{info.min}..{info.max}"
        )


def _cast(array: np.ndarray, label: str, dtype: DataType) -> np.ndarray:
    """`array` as `dtype`; refused where the values would change."""
    have, target = array.dtype.kind, dtype.numpy
    if array.size == 0:
        return array.astype(target)
    if target.kind == "b":
        if have != "b":
            raise _not_values(label, dtype, "true or false")
        return array
    if have not in "iu" and not (target.kind == "f" and have == "f"):
        raise _not_values(label, dtype, "numbers" if target.kind == "f" else "integers")
    if target.kind in "iu":
        _check_range(int(array.min()), int(array.max()), label, dtype)
    return array.astype(target)


def _not_values(label: str, dtype: DataType, expected: str) -> InvalidArgument:
    return InvalidArgument(
        f"input {label}: 'data' for {dtype.name} has other values, expected {expected}"
    )
