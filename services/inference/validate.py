"""Checking a request's tensors against the model's signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.common.datatypes import by_numpy
from services.common.errors import InvalidArgument
from services.inference.runtime import Signature, TensorSpec


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs ready for ONNX Runtime; InvalidArgument naming the first bad tensor."""
    expected = {spec.name: spec for spec in signature.inputs}
    for name in inputs:
        if name not in expected:
            raise InvalidArgument(f"unknown input '{name}', expected inputs {sorted(expected)}")
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InvalidArgument(
            f"missing input '{missing[0]}', expected inputs {sorted(expected)}, "
            f"got {sorted(inputs)}"
        )
    ready: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        array = inputs[name]
        _check_datatype(spec, by_numpy(array.dtype).name)
        _check_shape(spec, array.shape)
        ready[name] = as_ort_strings(name, array) if spec.datatype.is_bytes else array
    return ready


def _check_datatype(spec: TensorSpec, datatype: str) -> None:
    if datatype != spec.datatype.name:
        raise InvalidArgument(
            f"input '{spec.name}': datatype {datatype}, expected {spec.datatype.name}"
        )


def _check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    fits = len(shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits:
        raise InvalidArgument(
            f"input '{spec.name}': shape {list(shape)}, expected {list(spec.shape)} "
            "(-1 is any size)"
        )


def check_outputs(signature: Signature, requested: Sequence[str]) -> tuple[str, ...]:
    """The output names to return: the requested ones, or all when none were named."""
    names = [spec.name for spec in signature.outputs]
    for name in requested:
        if name not in names:
            raise InvalidArgument(f"unknown output '{name}', expected outputs {sorted(names)}")
    if len(set(requested)) != len(requested):
        raise InvalidArgument(f"output names repeat in the request: {list(requested)}")
    return tuple(requested) if requested else tuple(names)


def as_ort_strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as str, which ONNX Runtime string tensors need (UTF-8 only)."""
    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.ravel(), out.ravel()
    for i, item in enumerate(flat_in):
        if isinstance(item, str):
            flat_out[i] = item
            continue
        try:
            flat_out[i] = bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"input '{name}': BYTES element {i} is not UTF-8, which ONNX Runtime "
                "string tensors need"
            ) from None
    return out
