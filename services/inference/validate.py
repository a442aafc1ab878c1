"""Checking a request's tensors against the model's signature and limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.datatypes import by_numpy
from services.common.errors import InvalidArgument
from services.common.names import echo
from services.common.tensors import Encoded
from services.inference.runtime import Signature, TensorSpec

# Decoding and encoding cost a Python step per element for BYTES and typed contents;
# past this many such elements a request's tensors are converted off the event loop.
OFF_LOOP_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class TensorLimits:
    """How many elements one input tensor may have (InferenceSettings)."""

    # Numeric tensors are bounded by the message size as well (their bytes must be there).
    max_elements: int = 1 << 26
    # A BYTES element costs Python objects as it is decoded, run and encoded.
    max_bytes_elements: int = 1 << 20


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs ready for ONNX Runtime; InvalidArgument naming the first bad tensor."""
    ready: dict[str, np.ndarray] = {}
    for spec in _by_signature(signature, inputs):
        array = inputs[spec.name]
        _check_datatype(spec, by_numpy(array.dtype).name)
        _check_shape(spec, array.shape)
        ready[spec.name] = as_ort_strings(spec.name, array) if spec.datatype.is_bytes else array
    return ready


def check_encoded(
    signature: Signature,
    inputs: Mapping[str, Encoded],
    max_batch_size: int,
    limits: TensorLimits,
) -> list[Encoded]:
    """The request's tensors in signature order, each checked against its spec, the
    batch size limit (0: none) and the element cap before anything is decoded."""
    checked = []
    for spec in _by_signature(signature, inputs):
        tensor = inputs[spec.name]
        _check_datatype(spec, tensor.datatype.name)
        _check_shape(spec, tensor.shape)
        if max_batch_size > 0 and tensor.shape[0] > max_batch_size:
            raise InvalidArgument(
                f"input {echo(spec.name)}: batch size {tensor.shape[0]} (dimension 0 of shape "
                f"{list(tensor.shape)}), expected at most the model's max_batch_size "
                f"{max_batch_size}"
            )
        kind, limit = (
            ("BYTES elements", limits.max_bytes_elements)
            if tensor.datatype.is_bytes
            else ("elements", limits.max_elements)
        )
        if tensor.count > limit:
            raise InvalidArgument(
                f"input {echo(spec.name)}: shape {list(tensor.shape)} has {tensor.count} "
                f"{kind}, expected at most {limit} per tensor"
            )
        checked.append(tensor)
    return checked


def decode_costly(tensors: Sequence[Encoded]) -> bool:
    """Whether decoding `tensors` takes long enough to keep it off the event loop."""
    steps = sum(t.count for t in tensors if t.datatype.is_bytes or t.raw is None)
    return steps > OFF_LOOP_ELEMENTS


def decode_inputs(tensors: Sequence[Encoded]) -> dict[str, np.ndarray]:
    """Checked tensors decoded, ready for ONNX Runtime; InvalidArgument for bad data."""
    ready: dict[str, np.ndarray] = {}
    for tensor in tensors:
        array = tensor.decode()
        ready[tensor.name] = (
            as_ort_strings(tensor.name, array) if tensor.datatype.is_bytes else array
        )
    return ready


def _by_signature(signature: Signature, inputs: Mapping[str, object]) -> list[TensorSpec]:
    """The signature's inputs that are present, once every required one is and no
    other is."""
    expected = {spec.name: spec for spec in signature.inputs}
    for name in inputs:
        if name not in expected:
            raise InvalidArgument(f"unknown input {echo(name)}, expected inputs {sorted(expected)}")
    missing = [n for n, spec in expected.items() if n not in inputs and not spec.optional]
    if missing:
        got = [echo(name) for name in list(inputs)[:8]]
        raise InvalidArgument(
            f"missing input {echo(missing[0])}, expected inputs {sorted(expected)}, got {got}"
        )
    return [spec for name, spec in expected.items() if name in inputs]


def _check_datatype(spec: TensorSpec, datatype: str) -> None:
    if datatype != spec.datatype.name:
        raise InvalidArgument(
            f"input {echo(spec.name)}: datatype {datatype}, expected {spec.datatype.name}"
        )


def _check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    wanted = (spec.shape, *spec.also)
    if not any(_fits(want, shape) for want in wanted):
        expected = " or ".join(str(list(want)) for want in wanted)
        raise InvalidArgument(
            f"input {echo(spec.name)}: shape {list(shape)}, expected {expected} (-1 is any size)"
        )


def _fits(want: Sequence[int], shape: Sequence[int]) -> bool:
    return len(shape) == len(want) and all(
        w < 0 or w == got for w, got in zip(want, shape, strict=True)
    )


def check_outputs(signature: Signature, requested: Sequence[str]) -> tuple[str, ...]:
    """The output names to return: the requested ones, or all when none were named."""
    names = [spec.name for spec in signature.outputs]
    for name in requested:
        if name not in names:
            raise InvalidArgument(f"unknown output {echo(name)}, expected outputs {sorted(names)}")
    if len(set(requested)) != len(requested):
        raise InvalidArgument(
            f"output names repeat in the request, expected each of {sorted(names)} at most once"
        )
    return tuple(requested) if requested else tuple(names)


def as_ort_strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as str, which ONNX Runtime string tensors need (UTF-8 only)."""
    items = array.ravel().tolist()
    try:
        strings = [item if isinstance(item, str) else bytes(item).decode() for item in items]
    except UnicodeDecodeError:
        bad = next(i for i, item in enumerate(items) if not _is_utf8(item))
        raise InvalidArgument(
            f"input {echo(name)}: BYTES element {bad} is not UTF-8, which ONNX Runtime "
            "string tensors need"
        ) from None
    out = np.empty(len(strings), dtype=object)
    out[:] = strings
    return out.reshape(array.shape)


def _is_utf8(item: object) -> bool:
    if isinstance(item, str):
        return True
    try:
        bytes(item).decode()  # type: ignore[call-overload]
    except UnicodeDecodeError:
        return False
    return True
