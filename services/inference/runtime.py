"""ONNX Runtime sessions: provider choice, CUDA options, signature, warm-up."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from services.common.datatypes import DataType, by_onnx
from services.inference.config import PROVIDER_ALIASES, ModelConfig
from services.inference.cpus import available_cores

_log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# What ONNX Runtime raises: its own classes (plain Exceptions) and RuntimeError.
# Every class its binding module defines (Fail, InvalidProtobuf, NoSuchFile, EPFail, ...:
# the set differs between versions), so a file ORT cannot parse is a load failure with
# its reason, not an unexpected error.
ORT_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    *(
        value
        for value in vars(ort_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
)
# Session creation also raises ValueError for provider arguments it rejects.
LOAD_ERRORS: tuple[type[Exception], ...] = (ValueError, *ORT_ERRORS)
# Ops that do a model's real work: on the CPU under require_cuda they fail the load.
# Other ops ORT places on the CPU on purpose (shape arithmetic, small int64 tensors).
COMPUTE_OPS = frozenset(
    "Conv ConvTranspose ConvInteger QLinearConv FusedConv NhwcConv MatMul MatMulInteger "
    "QLinearMatMul FusedMatMul Gemm FusedGemm MatMulNBits Attention MultiHeadAttention "
    "GroupQueryAttention LSTM GRU RNN Einsum BatchNormalization LayerNormalization "
    "SkipLayerNormalization SimplifiedLayerNormalization SkipSimplifiedLayerNormalization "
    "InstanceNormalization GroupNorm Softmax LogSoftmax MaxPool AveragePool".split()
)


class LoadError(Exception):
    """A model could not be loaded; the message is the reason shown to users."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: v2 datatype and shape (-1 is dynamic)."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]
    # A request may leave it out (a text task's flags and parameters); ONNX inputs never.
    optional: bool = False
    # Other shapes a request may send (a text task's [n, 1] for [n]); metadata shows `shape`.
    also: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs, read from the ONNX graph."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batchable(self) -> bool:
        """Dimension 0 of every input and output is dynamic: requests can merge."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


def _spec(node: Any) -> TensorSpec:
    datatype = by_onnx(node.type)
    if datatype is None:
        raise LoadError(f"tensor '{node.name}' has type {node.type}, which maas cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or ()))
    return TensorSpec(node.name, datatype, shape)


def signature_of(session: ort.InferenceSession) -> Signature:
    """The signature of a loaded session."""
    return Signature(
        tuple(_spec(i) for i in session.get_inputs()),
        tuple(_spec(o) for o in session.get_outputs()),
    )


_auto_warned = False


def provider_chain(
    config: ModelConfig,
    available: list[str],
    inputs: Sequence[tuple[str, Sequence[int]]] = (),
) -> list[tuple[str, dict[str, str]]]:
    """The providers to ask ONNX Runtime for, in order, with their options.

    `inputs` (name, shape with -1 for dynamic) sizes TensorRT's optimisation profiles."""
    wanted: list[str] = []
    for name in config.providers:
        if name == "auto":
            if CUDA in available:
                wanted += [CUDA, CPU]
                continue
            if config.require_cuda:
                raise LoadError(
                    f"providers: [auto] found no {CUDA} in this ONNX Runtime ({available}) "
                    "and CUDA is required; install onnxruntime-gpu (maas[gpu])"
                )
            # A warning once per process (a CPU-only deployment would otherwise warn at
            # every load), then at info level.
            global _auto_warned
            _log.log(
                logging.INFO if _auto_warned else logging.WARNING,
                "providers: [auto]: this ONNX Runtime has no %s (only %s); the model runs on CPU",
                CUDA,
                available,
            )
            _auto_warned = True
            wanted.append(CPU)
        else:
            wanted.append(PROVIDER_ALIASES[name])
    if CPU not in wanted:
        wanted.append(CPU)
    chain: list[tuple[str, dict[str, str]]] = []
    for name in dict.fromkeys(wanted):
        if name != CPU and name not in available:
            if config.require_cuda:
                raise LoadError(
                    f"{name} was required but this ONNX Runtime has only {available}; "
                    "install onnxruntime-gpu with a matching CUDA and cuDNN"
                )
            _log.warning("provider %s is not available, skipping it", name)
            continue
        chain.append((name, _provider_options(name, config, inputs)))
    return chain


def _provider_options(
    name: str, config: ModelConfig, inputs: Sequence[tuple[str, Sequence[int]]]
) -> dict[str, str]:
    if name == CUDA:
        cuda = config.cuda
        options = {
            "device_id": str(cuda.device_id),
            "cudnn_conv_algo_search": cuda.cudnn_conv_algo_search,
            "arena_extend_strategy": cuda.arena_extend_strategy,
        }
        if cuda.gpu_mem_limit is not None:
            options["gpu_mem_limit"] = str(cuda.gpu_mem_limit)
        return options
    if name == TENSORRT:
        trt = config.tensorrt
        options = {"device_id": str(config.cuda.device_id), "trt_fp16_enable": str(trt.fp16)}
        if trt.engine_cache_dir:
            options["trt_engine_cache_enable"] = "True"
            options["trt_engine_cache_path"] = trt.engine_cache_dir
            if trt.timing_cache:
                options["trt_timing_cache_enable"] = "True"
                options["trt_timing_cache_path"] = trt.engine_cache_dir
        elif trt.timing_cache:
            options["trt_timing_cache_enable"] = "True"
        options.update(tensorrt_profiles(inputs, config.dynamic_batching.max_batch_size))
        return options
    return {}


def tensorrt_profiles(
    inputs: Sequence[tuple[str, Sequence[int]]], max_batch: int
) -> dict[str, str]:
    """trt_profile_min/opt/max_shapes for batch 1..max_batch, so TensorRT builds one engine
    for every batch the batcher makes instead of rebuilding as batches grow. Empty when
    an input has another dynamic dimension (TensorRT then builds from the shapes it sees)."""
    if not inputs or not any(shape and shape[0] < 0 for _, shape in inputs):
        return {}
    if any(d < 0 for _, shape in inputs for d in shape[1:]):
        _log.info("tensorrt: inputs have dynamic dimensions beyond the batch; no profiles set")
        return {}

    def shapes(batch: int) -> str:
        return ",".join(
            f"{name}:" + "x".join(str(batch if d < 0 else d) for d in shape)
            for name, shape in inputs
        )

    return {
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(max_batch),
        "trt_profile_max_shapes": shapes(max_batch),
    }


def model_inputs(path: Path) -> list[tuple[str, list[int]]]:
    """The graph inputs of an ONNX file (-1 for dynamic), without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [
        (
            i.name,
            [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim],
        )
        for i in model.graph.input
        if i.name not in initializers
    ]


def session_options(config: ModelConfig, cores: int | None = None) -> ort.SessionOptions:
    """Thread pools sized so that all instances together do not oversubscribe the cores
    this process may use (affinity and cgroup quota, not the host's count)."""
    cores = cores or available_cores()
    options = ort.SessionOptions()
    intra = config.threads.intra_op or max(1, cores // config.instances)
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = config.threads.inter_op or 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = config.threads.spinning
    if spinning is None:
        # The event loop (decoding, encoding, gRPC) needs a core too.
        spinning = intra * config.instances <= cores - 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return options


@dataclass(frozen=True)
class RunnerPlan:
    """How a session is run: plain `run`, or IO binding with outputs kept on a device.

    With CUDA (or TensorRT) first, IO binding binds the inputs from host memory,
    keeps the outputs on the device until the one copy out, and stages merged
    batches in pinned host memory when ONNX Runtime can allocate it.
    """

    kind: Literal["run", "iobinding"]
    device: Literal["cpu", "cuda"] = "cpu"
    device_id: int = 0
    pinned_inputs: bool = False


def runner_plan(active: Sequence[str], config: ModelConfig, signature: Signature) -> RunnerPlan:
    """The runner for a session whose providers, in order, are `active`."""
    on_gpu = bool(active) and active[0] in (CUDA, TENSORRT)
    has_strings = any(t.datatype.is_bytes for t in (*signature.inputs, *signature.outputs))
    if not on_gpu or not config.cuda.io_binding or has_strings:
        # String tensors live on the host only, so they gain nothing from binding.
        return RunnerPlan("run")
    return RunnerPlan(
        "iobinding", "cuda", config.cuda.device_id, pinned_inputs=config.cuda.pinned_inputs
    )


SessionFactory = Callable[..., ort.InferenceSession]
_preloaded = False


def preload_cuda(chain: Iterable[str]) -> bool:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first CUDA session, as ORT
    asks when CUDA comes from pip rather than the system; once, and only when a CUDA
    provider is requested, this ORT has `preload_dlls` and the wheels are installed."""
    global _preloaded
    if _preloaded or not {CUDA, TENSORRT} & set(chain):
        return _preloaded
    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return False
    ort.preload_dlls(cuda=True, cudnn=True, msvc=False)
    _preloaded = True
    return True


def create_session(
    path: Path, config: ModelConfig, factory: SessionFactory | None = None
) -> ort.InferenceSession:
    """A session on the chosen providers; LoadError if CUDA was required but not used.

    ORT's Python fallbacks are off: a failed creation is not retried with default
    options (which would drop device_id and the arena settings), and a run that fails
    on an EP does not move the session to the CPU for good."""
    available = ort.get_available_providers()
    wants_trt = TENSORRT in (PROVIDER_ALIASES.get(p, p) for p in config.providers)
    inputs = model_inputs(path) if wants_trt and TENSORRT in available else []
    chain = provider_chain(config, available, inputs)
    names = [name for name, _ in chain]
    wanted_gpu = [name for name in names if name != CPU]
    sess_options = session_options(config)
    if wanted_gpu:
        preload_cuda(names)
        sess_options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if config.cuda.strict:
            sess_options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    make = factory or ort.InferenceSession
    try:
        session = make(
            str(path),
            sess_options=sess_options,
            providers=names,
            provider_options=[options for _, options in chain],
            enable_fallback=0,
        )
    except LOAD_ERRORS as exc:
        raise LoadError(f"ONNX Runtime could not load {path.name} on {names}: {exc}") from exc
    session.disable_fallback()
    if wanted_gpu:
        check_placement(session, wanted_gpu, config.require_cuda)
    return session


def check_placement(session: Any, wanted: list[str], required: bool) -> None:
    """Every wanted GPU provider is active, and no compute node runs on the CPU.

    ORT keeps `get_providers()` unchanged when single nodes fall back to the CPU, so the
    nodes are read from ORT's graph assignment record where this ORT has it. Under
    `required` a problem fails the load; otherwise it is logged."""
    problems = []
    active = session.get_providers()
    missing = [name for name in wanted if name not in active]
    if missing:
        problems.append(f"{', '.join(missing)} did not start (active: {active})")
    cpu_ops = cpu_compute_nodes(session)
    if cpu_ops:
        counts = ", ".join(f"{op} x{n}" for op, n in sorted(cpu_ops.items()))
        problems.append(f"compute nodes run on the CPU: {counts}")
    if not problems:
        return
    reason = "; ".join(problems)
    if required:
        raise LoadError(
            f"CUDA was required but {reason}; check that the CUDA and cuDNN versions match "
            "onnxruntime-gpu and that the model's ops have CUDA kernels"
        )
    _log.warning("the model does not run fully on %s: %s", wanted[0], reason)


def cpu_compute_nodes(session: Any) -> dict[str, int]:
    """Compute ops (COMPUTE_OPS) the session placed on the CPU, by op type; empty when
    this ORT cannot say (no get_provider_graph_assignment_info)."""
    if not hasattr(session, "get_provider_graph_assignment_info"):
        return {}
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except ORT_ERRORS as exc:  # recording was not enabled: nothing to check
        _log.debug("no graph assignment record: %s", exc)
        return {}
    counts: dict[str, int] = {}
    for subgraph in subgraphs:
        if subgraph.ep_name != CPU:
            continue
        for node in subgraph.get_nodes():
            if node.op_type in COMPUTE_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def placement(session: Any) -> dict[str, int]:
    """Nodes per execution provider, from ORT's graph assignment record (empty if none)."""
    if not hasattr(session, "get_provider_graph_assignment_info"):
        return {}
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except ORT_ERRORS:
        return {}
    counts: dict[str, int] = {}
    for subgraph in subgraphs:
        counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
    return counts


def zeros_for(spec: TensorSpec) -> np.ndarray:
    """A warm-up input: zeros, with 1 for each dynamic dimension."""
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if spec.datatype.is_bytes:
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=spec.datatype.numpy)
