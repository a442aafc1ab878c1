"""Parity between a PyTorch module and its ONNX export, run on ONNX Runtime (CPU).

torch, onnxruntime and the module under test are imported lazily: `maas` imports
this module for every command, and torch is an optional extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# ONNX Runtime's type strings for the tensor types a model input can have.
_ORT_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class ExportError(Exception):
    """The export failed, or the exported model does not match the module.

    `report` is set when the parity check ran and found the outputs too far apart.
    """

    def __init__(self, message: str, *, report: ParityReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ParityReport:
    """How far the ONNX outputs are from the torch outputs, over every output element.

    The relative error divides by max(|torch value|, atol), so outputs near zero are
    judged by their absolute error. `passed` uses numpy's allclose rule per element:
    |onnx - torch| <= atol + rtol * |torch|.
    """

    max_abs_error: float
    max_rel_error: float
    passed: bool


def random_inputs(
    examples: Sequence[torch.Tensor], *, batch_size: int | None, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Seeded random tensors shaped and typed like `examples`, with dim 0 set to batch_size.

    Floats are standard normal, integers are drawn from [0, 10) (valid indices for
    most embeddings), booleans are fair coin flips. batch_size None keeps the shapes.
    """
    import torch

    rng = np.random.default_rng(seed)
    made = []
    for example in examples:
        shape = tuple(example.shape)
        if batch_size is not None and shape:
            shape = (batch_size, *shape[1:])
        if example.dtype == torch.bool:
            array: np.ndarray = rng.integers(0, 2, size=shape).astype(np.bool_)
            made.append(torch.from_numpy(array))
        elif example.is_floating_point():
            array = rng.standard_normal(size=shape).astype(np.float32)
            made.append(torch.from_numpy(array).to(example.dtype))
        else:
            array = rng.integers(0, 10, size=shape)
            made.append(torch.from_numpy(array).to(example.dtype))
    return tuple(made)


def check_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    inputs: Sequence[torch.Tensor],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ParityReport:
    """Run `module` and the ONNX model at `onnx_path` on `inputs`; raise ExportError on mismatch.

    Inputs go to ONNX Runtime cast to the types the model declares, so an FP16 model is
    compared against the FP32 module it came from. Output counts, shapes and values
    must agree; the report is returned only when they do.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    declared = session.get_inputs()
    if len(declared) != len(inputs):
        raise ExportError(f"the ONNX model has {len(declared)} inputs, {len(inputs)} were given")
    feeds = {}
    for meta, tensor in zip(declared, inputs, strict=True):
        dtype = _ORT_TYPES.get(meta.type)
        if dtype is None:
            raise ExportError(f"input '{meta.name}' has unsupported type {meta.type}")
        feeds[meta.name] = tensor.detach().cpu().numpy().astype(dtype)

    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            outputs = module(*inputs)
    except Exception as exc:  # whatever the module raises, the inputs are the likely cause
        raise ExportError(
            f"the module failed on the parity inputs ({type(exc).__name__}: {exc}); "
            "pass inputs that it accepts"
        ) from exc
    finally:
        module.train(was_training)
    expected = _flatten(outputs)
    actual = session.run(None, feeds)
    names = [meta.name for meta in session.get_outputs()]
    if len(actual) != len(expected):
        raise ExportError(f"the ONNX model has {len(actual)} outputs, the module {len(expected)}")

    max_abs = max_rel = 0.0
    failures = []
    for name, got, want in zip(names, actual, expected, strict=True):
        if tuple(got.shape) != tuple(want.shape):
            raise ExportError(
                f"output '{name}': ONNX shape {list(got.shape)} != torch shape {list(want.shape)}"
            )
        abs_err, rel_err, ok = _compare(np.asarray(got), want, atol, rtol)
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
        if not ok:
            failures.append(name)
    report = ParityReport(max_abs, max_rel, passed=not failures)
    if failures:
        raise ExportError(
            f"parity check failed for {', '.join(repr(n) for n in failures)}: "
            f"max abs error {max_abs:.3g}, max rel error {max_rel:.3g} "
            f"(atol {atol:g}, rtol {rtol:g})",
            report=report,
        )
    return report


def _flatten(outputs: Any) -> list[np.ndarray]:
    """The module's output tensors, in order, as numpy arrays."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().cpu().numpy()]
    if isinstance(outputs, list | tuple):
        return [array for item in outputs for array in _flatten(item)]
    raise ExportError(f"the module returned {type(outputs).__name__}, expected tensors")


def _compare(
    got: np.ndarray, want: np.ndarray, atol: float, rtol: float
) -> tuple[float, float, bool]:
    """(max abs error, max rel error, allclose) of two arrays; NaNs must match NaNs."""
    if got.size == 0:
        return 0.0, 0.0, True
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    diff = np.abs(got64 - want64)
    both_nan = np.isnan(got64) & np.isnan(want64)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = math.inf  # NaN on one side only
    both_inf = np.isinf(got64) & (got64 == want64)
    diff[both_inf] = 0.0
    scale = np.abs(np.nan_to_num(want64, nan=0.0, posinf=0.0, neginf=0.0))
    ok = bool(np.all(diff <= atol + rtol * scale))
    rel = diff / np.maximum(scale, atol if atol > 0 else np.finfo(np.float64).tiny)
    return float(diff.max()), float(rel.max()), ok
