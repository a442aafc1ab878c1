"""ONNX Runtime sessions: provider choice, CUDA options, signature, warm-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from services.common.datatypes import DataType, by_onnx
from services.inference.config import PROVIDER_ALIASES, ModelConfig

_log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


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


def provider_chain(config: ModelConfig, available: list[str]) -> list[tuple[str, dict[str, str]]]:
    """The providers to ask ONNX Runtime for, in order, with their options."""
    wanted: list[str] = []
    for name in config.providers:
        if name == "auto":
            wanted += [CUDA, CPU] if CUDA in available else [CPU]
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
        chain.append((name, _provider_options(name, config)))
    return chain


def _provider_options(name: str, config: ModelConfig) -> dict[str, str]:
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
        return options
    return {}


def session_options(config: ModelConfig, cores: int | None = None) -> ort.SessionOptions:
    """Thread pools sized so that all instances together do not oversubscribe the cores."""
    cores = cores or os.cpu_count() or 1
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


def create_session(path: Path, config: ModelConfig) -> ort.InferenceSession:
    """A session on the chosen providers; LoadError if CUDA was required but not used."""
    chain = provider_chain(config, ort.get_available_providers())
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options(config),
            providers=[name for name, _ in chain],
            provider_options=[options for _, options in chain],
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises bare RuntimeError/Fail types
        raise LoadError(f"ONNX Runtime could not load {path.name}: {exc}") from exc
    active = session.get_providers()
    wanted_gpu = [name for name, _ in chain if name != CPU]
    if wanted_gpu and active[0] != wanted_gpu[0] and config.require_cuda:
        # ORT falls back to CPU silently when the CUDA libraries do not load.
        raise LoadError(
            f"{wanted_gpu[0]} was required but ONNX Runtime fell back to {active[0]}; "
            "check that the CUDA and cuDNN versions match onnxruntime-gpu"
        )
    return session


def zeros_for(spec: TensorSpec) -> np.ndarray:
    """A warm-up input: zeros, with 1 for each dynamic dimension."""
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if spec.datatype.is_bytes:
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=spec.datatype.numpy)
