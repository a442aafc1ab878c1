"""IO binding for CUDA sessions: one binding per runner, outputs into host buffers.

Why: a plain `run()` copies every output from the device into a new numpy array, and
binding outputs to the device only to call `copy_outputs_to_cpu()` makes the very
same copies. What binding does save is ORT's own output allocation and, with page-locked
(pinned) host buffers, the staging copy CUDA makes for pageable memory. So outputs are
bound to host buffers this runner keeps per batch size, where the output shapes follow
from the batch size (every dimension but the batch one fixed); otherwise it runs plain
`run()`. A kept buffer is reused only once nothing outside the pool refers to it any
more (results are views of it until the response is written).
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import math
import sys
from collections import OrderedDict

import numpy as np
import onnxruntime as ort

from services.inference.runtime import ORT_ERRORS, RunnerPlan, Signature

_log = logging.getLogger(__name__)
Tensors = dict[str, np.ndarray]
# Output buffers kept per runner; beyond it, the least recently used go.
MAX_OUTPUT_BYTES = 256 << 20
# Per (output, batch size): more than this in use at once (slow clients) are not kept.
BUFFERS_PER_SHAPE = 4
# What references a free pool buffer: the pool's list, and getrefcount's argument.
_FREE_REFS = 2


def accepts_memory_info() -> bool:
    """Whether this ORT's `OrtValue.ortvalue_from_shape_and_type` takes `memory_info`
    (added after 1.26, onnxruntime PR #28038): without it there is no pinned allocation."""
    try:
        parameters = inspect.signature(ort.OrtValue.ortvalue_from_shape_and_type).parameters
    except (TypeError, ValueError):  # a builtin without a signature: do not guess
        return False
    return "memory_info" in parameters


def pinned_memory_info(device_id: int) -> object | None:
    """ORT's host-accessible (pinned) memory of a CUDA device, where this ORT exposes it.

    OrtHardwareDevice.device_id is the PCI device id, not the CUDA ordinal, so the
    device is the `device_id`-th CUDA EP device in ONNX Runtime's list."""
    if not hasattr(ort, "get_ep_devices") or not hasattr(ort, "OrtDeviceMemoryType"):
        return None  # an ORT older than the EP device API
    cuda = [d for d in ort.get_ep_devices() if d.ep_name == "CUDAExecutionProvider"]
    if device_id >= len(cuda):
        return None
    return cuda[device_id].memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)


class PinnedAllocator:
    """Page-locked host arrays from ORT's allocator, or None when they cannot be had.

    `available` is true only after one real allocation succeeded; `reason` says why not."""

    def __init__(self, memory_info: object | None) -> None:
        self.memory_info: object | None = None
        self.reason = ""
        if memory_info is None:
            self.reason = "this ONNX Runtime exposes no host-accessible memory for the device"
        elif not accepts_memory_info():
            self.reason = (
                f"onnxruntime {ort.__version__} cannot allocate an OrtValue in a given memory "
                "(no memory_info argument)"
            )
        else:
            try:
                self._value((1,), np.dtype(np.float32), memory_info)
            except ORT_ERRORS as exc:  # ORT raises its own classes and RuntimeError
                self.reason = f"a pinned allocation failed: {exc}"
            else:
                self.memory_info = memory_info
        if self.reason:
            _log.info("pinned host memory is not used: %s", self.reason)

    @property
    def available(self) -> bool:
        return self.memory_info is not None

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A pinned array; ordinary memory if pinned memory is not (or no longer) available."""
        if self.memory_info is not None:
            try:
                return array_over(self._value(shape, dtype, self.memory_info), shape, dtype)
            except ORT_ERRORS as exc:  # out of pinned memory: keep serving
                _log.warning("pinned host memory failed (%s); using pageable memory", exc)
                self.memory_info, self.reason = None, f"a pinned allocation failed: {exc}"
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def _value(shape: tuple[int, ...], dtype: np.dtype, memory_info: object) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(
            list(shape),
            dtype.type,
            memory_info=memory_info,
        )


def array_over(value: ort.OrtValue, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A numpy view of an OrtValue's host memory that keeps the OrtValue alive, and only
    as long as the view (or an array derived from it) lives: buffers the batcher's LRU
    drops free their (pinned) memory with them."""
    count = math.prod(shape) * dtype.itemsize
    raw = (ctypes.c_byte * count).from_address(value.data_ptr())
    raw.owner = value  # type: ignore[attr-defined]  # ndarray.base -> memoryview -> raw
    return np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)


class OutputBuffers:
    """Host buffers for outputs, per (output, shape), reused once no result refers to them."""

    def __init__(self, allocate: PinnedAllocator, max_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self._allocate = allocate
        self.max_bytes = max_bytes
        self._pools: OrderedDict[tuple[object, ...], list[np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.allocations = 0

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        key = (name, shape, dtype.str)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = []
        self._pools.move_to_end(key)
        for buffer in pool:
            if sys.getrefcount(buffer) <= _FREE_REFS + 1:  # + this loop's variable
                return buffer
        buffer = self._allocate(shape, dtype)
        self.allocations += 1
        if len(pool) < BUFFERS_PER_SHAPE and buffer.nbytes <= self.max_bytes:
            while self._pools and self._bytes + buffer.nbytes > self.max_bytes:
                _, old = self._pools.popitem(last=False)
                self._bytes -= sum(b.nbytes for b in old)
                if old is pool:
                    pool = self._pools[key] = []
            pool.append(buffer)
            self._bytes += buffer.nbytes
        return buffer

    @property
    def nbytes(self) -> int:
        return self._bytes


class IoBindingRunner:
    """Runs a session through one IO binding: inputs bound from host memory, outputs
    written by ORT straight into host buffers this runner keeps (pinned where ORT
    can allocate them). Used from one instance thread only, like the session."""

    def __init__(self, session: ort.InferenceSession, signature: Signature, plan: RunnerPlan):
        self.session = session
        self.plan = plan
        self.output_names = [o.name for o in signature.outputs]
        info = pinned_memory_info(plan.device_id) if plan.pinned_inputs else None
        self._pinned = PinnedAllocator(info)
        self.binding = session.io_binding()
        self.outputs = OutputBuffers(self._pinned)
        # Output shapes known from the batch size: [-1, fixed...] with a batchable
        # signature, or fully fixed. Otherwise plain run() (ORT sizes the outputs).
        self._shapes: list[tuple[int, ...]] | None = []
        for spec in signature.outputs:
            dims = spec.shape[1:] if signature.batchable else spec.shape
            if any(d < 0 for d in dims) or spec.datatype.is_bytes:
                self._shapes = None
                break
            self._shapes.append(spec.shape)
        self._dtypes = [np.dtype(o.datatype.numpy) for o in signature.outputs]

    @property
    def pinned(self) -> bool:
        """Whether allocate() hands out page-locked host memory (one allocation worked)."""
        return self._pinned.available

    @property
    def pinned_reason(self) -> str:
        """Why pinned memory is not used; empty when it is."""
        return self._pinned.reason

    @property
    def binds_outputs(self) -> bool:
        """Whether outputs go into kept host buffers (else plain run())."""
        return self._shapes is not None

    def __call__(self, inputs: Tensors) -> Tensors:
        if self._shapes is None:
            return dict(
                zip(self.output_names, self.session.run(self.output_names, inputs), strict=True)
            )
        rows = next(iter(inputs.values())).shape[0] if inputs else 1
        binding = self.binding
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        outputs: Tensors = {}
        for name, shape, dtype in zip(self.output_names, self._shapes, self._dtypes, strict=True):
            full = tuple(rows if d < 0 else d for d in shape)
            buffer = self.outputs.get(name, full, dtype)
            binding.bind_output(name, "cpu", 0, dtype.type, list(full), buffer.ctypes.data)
            outputs[name] = buffer
        self.session.run_with_iobinding(binding)
        if self.plan.device != "cpu":
            binding.synchronize_outputs()
        return outputs

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A host buffer for merged batches: pinned where ORT can allocate it, so the
        copy to the GPU is a direct DMA; ordinary memory otherwise."""
        return self._pinned(shape, dtype)
