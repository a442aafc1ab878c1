"""The CUDA path's fixes that can be checked without a GPU (issue G's review).

Pinned memory is reported only after a real allocation; IO binding keeps one binding
and host output buffers and gives run()'s outputs; ORT's fallbacks are off and
require_cuda reads every node's placement; TensorRT profiles; the CPU quota."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from services.inference import binding as binding_module
from services.inference.binding import IoBindingRunner, OutputBuffers, PinnedAllocator
from services.inference.config import ModelConfig, parse_config
from services.inference.cpus import available_cores, cgroup_quota
from services.inference.instances import InstanceThread, Job
from services.inference.model import make_runner
from services.inference.runtime import (
    CPU,
    CUDA,
    LoadError,
    RunnerPlan,
    cpu_compute_nodes,
    create_session,
    provider_chain,
    signature_of,
)

TRT = "TensorrtExecutionProvider"
ON_CPU = RunnerPlan("iobinding", "cpu", 0, pinned_inputs=False)


def cpu_memory_info() -> object:
    """Host memory with a shared ORT allocator: stands in for CUDA's pinned memory (ORT
    allocates an OrtValue in a given memory only through a registered allocator)."""
    state = ort.capi._pybind_state
    info = state.OrtMemoryInfo(
        "Cpu", state.OrtAllocatorType.ORT_DEVICE_ALLOCATOR, 0, state.OrtMemType.DEFAULT
    )
    state.create_and_register_allocator(info, None)
    return info


# -- 1. pinned buffers ------------------------------------------------------------------


def test_pinned_is_reported_only_after_an_allocation_succeeds() -> None:
    allocate = PinnedAllocator(cpu_memory_info())
    assert allocate.available and allocate.reason == ""
    array = allocate((2, 3), np.dtype(np.float32))
    array[...] = 1.0
    assert array.shape == (2, 3) and float(array.sum()) == 6.0
    assert not PinnedAllocator(None).available


def test_an_ort_without_memory_info_never_claims_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    def old_signature(shape: Any, element_type: Any, device_type: str = "cpu") -> None:
        raise AssertionError("must not be called without memory_info support")

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", old_signature)
    allocate = PinnedAllocator(cpu_memory_info())
    assert not allocate.available and "no memory_info argument" in allocate.reason
    assert allocate((4,), np.dtype(np.float32)).shape == (4,)  # pageable memory


def test_a_failing_pinned_allocation_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def failing(shape: Any, element_type: Any, memory_info: Any = None) -> None:
        raise Fail("cudaHostAlloc failed")

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", failing)
    allocate = PinnedAllocator(cpu_memory_info())
    assert not allocate.available and "cudaHostAlloc failed" in allocate.reason


def test_a_type_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(shape: Any, element_type: Any, memory_info: Any = None) -> None:
        raise TypeError("a bug, not a missing feature")

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", broken)
    with pytest.raises(TypeError, match="a bug"):
        PinnedAllocator(cpu_memory_info())


# -- 2. IO binding ----------------------------------------------------------------------


def cnn(test_models: Path) -> ort.InferenceSession:
    return create_session(test_models / "cnn" / "1" / "model.onnx", ModelConfig(providers=("cpu",)))


async def test_binding_gives_runs_outputs_for_merged_batches(test_models: Path) -> None:
    session = cnn(test_models)
    signature = signature_of(session)
    plain = make_runner(session, signature)
    bound = IoBindingRunner(session, signature, ON_CPU)
    assert bound.binds_outputs
    one_binding = bound.binding
    thread = InstanceThread(bound, 8, 0)
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    try:
        for rows in ((1, 2), (3, 1, 4), (2, 2)):
            parts = [rng.standard_normal((r, 1, 8, 8)).astype(np.float32) for r in rows]
            jobs = [
                Job({"input": p}, r, (), None, loop.create_future(), r)
                for p, r in zip(parts, rows, strict=True)
            ]
            results, _ = await thread.run(jobs)
            want = plain({"input": np.concatenate(parts)})["probabilities"]
            got = np.concatenate([r["probabilities"] for r in results])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        thread.stop()
        thread.join()
    assert bound.binding is one_binding


async def test_an_instance_thread_lets_output_buffers_be_reused(test_models: Path) -> None:
    session = cnn(test_models)
    bound = IoBindingRunner(session, signature_of(session), ON_CPU)
    thread = InstanceThread(bound, 8, 0)
    loop = asyncio.get_running_loop()
    try:
        for value in (1.0, 2.0, 3.0):
            x = np.full((2, 1, 8, 8), value, np.float32)
            jobs = [Job({"input": x}, 2, (), None, loop.create_future(), 2)]
            results, _ = await thread.run(jobs)
            assert results[0]["probabilities"].shape == (2, 10)
            del results, jobs
    finally:
        thread.stop()
        thread.join()
    assert bound.outputs.allocations == 1


def test_output_buffers_are_reused_only_once_released(test_models: Path) -> None:
    session = cnn(test_models)
    bound = IoBindingRunner(session, signature_of(session), ON_CPU)
    x = np.ones((2, 1, 8, 8), np.float32)
    held = bound({"input": x})["probabilities"]
    again = bound({"input": x * 2})["probabilities"]
    assert not np.shares_memory(held, again)  # the first result is still in use
    want = held.copy()
    address = again.__array_interface__["data"][0]
    del again
    third = bound({"input": x * 3})["probabilities"]
    assert third.__array_interface__["data"][0] == address  # reused once dropped
    np.testing.assert_array_equal(held, want)  # never overwritten while held
    assert bound.outputs.allocations == 2


def test_output_buffers_stay_under_their_byte_cap() -> None:
    buffers = OutputBuffers(PinnedAllocator(None), max_bytes=1000)
    for rows in range(1, 20):
        buffers.get("y", (rows, 10), np.dtype(np.float32))
    assert buffers.nbytes <= 1000


def test_dynamic_output_dims_use_plain_run(test_models: Path) -> None:
    path = test_models / "dt_bytes" / "1" / "model.onnx"  # [batch, n]: n unknown
    session = create_session(path, ModelConfig(providers=("cpu",)))
    runner = IoBindingRunner(session, signature_of(session), ON_CPU)
    assert not runner.binds_outputs
    out = runner({"x": np.array([["a", "b"]], dtype=object)})
    assert out["y"].tolist() == [["a", "b"]]


# -- 3. require_cuda and ORT's fallbacks ------------------------------------------------


class Node:
    def __init__(self, op_type: str) -> None:
        self.op_type, self.name, self.domain = op_type, "", ""


class Subgraph:
    def __init__(self, ep_name: str, ops: list[str]) -> None:
        self.ep_name, self._nodes = ep_name, [Node(op) for op in ops]

    def get_nodes(self) -> list[Node]:
        return self._nodes


class FakeSession:
    """What create_session reads of a session ORT placed `assigned` (ep -> ops)."""

    def __init__(self, active: list[str], assigned: dict[str, list[str]]) -> None:
        self.active, self.assigned = active, assigned
        self.fallback = True

    def get_providers(self) -> list[str]:
        return self.active

    def get_provider_graph_assignment_info(self) -> list[Subgraph]:
        return [Subgraph(ep, ops) for ep, ops in self.assigned.items()]

    def disable_fallback(self) -> None:
        self.fallback = False


class Factory:
    def __init__(self, session: FakeSession | None = None, error: Exception | None = None):
        self.session, self.error = session, error
        self.calls: list[dict[str, Any]] = []

    def __call__(self, path: str, **kwargs: Any) -> FakeSession:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        assert self.session is not None
        return self.session


@pytest.fixture
def with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


GPU_ALL = {CUDA: ["Conv", "Gemm", "Softmax"], CPU: ["Shape", "Gather", "Concat"]}


def entry(call: dict[str, Any], key: str) -> str:
    return str(call["sess_options"].get_session_config_entry(key))


@pytest.mark.usefixtures("with_cuda")
def test_fallbacks_are_off_and_placement_is_recorded(tmp_path: Path) -> None:
    factory = Factory(FakeSession([CUDA, CPU], GPU_ALL))
    config = parse_config("require_cuda: true\ncuda: {device_id: 3}", source="c")
    session: Any = create_session(tmp_path / "m.onnx", config, factory)
    (call,) = factory.calls
    assert call["enable_fallback"] == 0 and not session.fallback
    assert call["providers"] == [CUDA, CPU]
    assert call["provider_options"][0]["device_id"] == "3"
    assert entry(call, "session.record_ep_graph_assignment_info") == "1"
    with pytest.raises(Exception, match="disable_cpu_ep_fallback"):
        entry(call, "session.disable_cpu_ep_fallback")  # not strict unless asked


@pytest.mark.usefixtures("with_cuda")
def test_strict_mode_sets_disable_cpu_ep_fallback(tmp_path: Path) -> None:
    factory = Factory(FakeSession([CUDA, CPU], GPU_ALL))
    create_session(tmp_path / "m.onnx", parse_config("cuda: {strict: true}", source="c"), factory)
    assert entry(factory.calls[0], "session.disable_cpu_ep_fallback") == "1"


@pytest.mark.usefixtures("with_cuda")
def test_compute_nodes_on_the_cpu_fail_required_cuda(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    placed = {CUDA: ["Gemm"], CPU: ["Conv", "Conv", "Shape"]}
    factory = Factory(FakeSession([CUDA, CPU], placed))
    required = ModelConfig(providers=("cuda",), require_cuda=True)
    with pytest.raises(LoadError, match=r"compute nodes run on the CPU: Conv x2"):
        create_session(tmp_path / "m.onnx", required, factory)
    with caplog.at_level(logging.WARNING):
        create_session(tmp_path / "m.onnx", ModelConfig(providers=("cuda",)), factory)
    assert "Conv x2" in caplog.text


@pytest.mark.usefixtures("with_cuda")
def test_a_provider_that_did_not_start_fails_required_cuda(tmp_path: Path) -> None:
    factory = Factory(FakeSession([CPU], {CPU: ["Conv"]}))
    with pytest.raises(LoadError, match="CUDAExecutionProvider did not start"):
        create_session(tmp_path / "m.onnx", ModelConfig(require_cuda=True), factory)


@pytest.mark.usefixtures("with_cuda")
def test_a_failed_creation_is_not_retried_with_default_options(tmp_path: Path) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    factory = Factory(error=Fail("CUDA failure 100: no CUDA-capable device"))
    with pytest.raises(LoadError, match="no CUDA-capable device"):
        create_session(tmp_path / "m.onnx", ModelConfig(providers=("cuda",)), factory)
    assert len(factory.calls) == 1


def test_auto_without_cuda_logs_and_fails_when_required(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.inference import runtime

    monkeypatch.setattr(runtime, "_auto_warned", False)
    with caplog.at_level(logging.INFO):
        assert [n for n, _ in provider_chain(ModelConfig(), [CPU])] == [CPU]
        provider_chain(ModelConfig(), [CPU])
    levels = [r.levelno for r in caplog.records if "providers: [auto]" in r.getMessage()]
    assert levels == [logging.WARNING, logging.INFO]  # warned once, then noted
    assert "runs on CPU" in caplog.text
    with pytest.raises(LoadError, match=r"providers: \[auto\] found no CUDAExecutionProvider"):
        provider_chain(ModelConfig(require_cuda=True), [CPU])


def test_real_placement_record_finds_cpu_compute_nodes(test_models: Path) -> None:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    path = str(test_models / "cnn" / "1" / "model.onnx")
    session = ort.InferenceSession(path, options, providers=[CPU])
    assert "Conv" in cpu_compute_nodes(session)
    unrecorded = ort.InferenceSession(path, providers=[CPU])
    assert cpu_compute_nodes(unrecorded) == {}


# -- 5. TensorRT --------------------------------------------------------------------------


def test_tensorrt_profiles_cover_every_batch_and_caches_are_on() -> None:
    config = parse_config(
        "providers: [tensorrt, cuda]\ndynamic_batching: {max_batch_size: 16}\n"
        "tensorrt: {engine_cache_dir: /cache/trt}",
        source="c",
    )
    inputs = [("image", [-1, 3, 224, 224]), ("scale", [-1, 1])]
    options = dict(provider_chain(config, [TRT, CUDA, CPU], inputs))[TRT]
    assert options["trt_profile_min_shapes"] == "image:1x3x224x224,scale:1x1"
    assert options["trt_profile_opt_shapes"] == "image:16x3x224x224,scale:16x1"
    assert options["trt_profile_max_shapes"] == "image:16x3x224x224,scale:16x1"
    assert options["trt_timing_cache_enable"] == "True"
    assert options["trt_timing_cache_path"] == options["trt_engine_cache_path"] == "/cache/trt"
    # Dynamic dimensions beyond the batch: no profile (TensorRT sizes from what it sees).
    dynamic = dict(provider_chain(config, [TRT, CUDA, CPU], [("ids", [-1, -1])]))[TRT]
    assert "trt_profile_min_shapes" not in dynamic


# -- 6. the CPU quota ---------------------------------------------------------------------


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_quota(tmp_path) == 2.5
    assert available_cores(tmp_path) <= 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota_and_no_cgroup(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert available_cores(tmp_path) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None
    assert cgroup_quota(tmp_path / "absent") is None


def test_binding_module_detects_memory_info_on_this_ort() -> None:
    # onnxruntime 1.32 has it; the check reads the signature instead of calling.
    assert binding_module.accepts_memory_info()


# -- 4. CUDA from the nvidia wheels -----------------------------------------------------


def test_preload_dlls_only_for_cuda_with_the_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.inference import runtime

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ort, "preload_dlls", lambda **kw: calls.append(kw), raising=False)
    monkeypatch.setattr(runtime, "_preloaded", False)
    assert not runtime.preload_cuda([CPU]) and calls == []
    if importlib.util.find_spec("nvidia") is None:  # no nvidia wheels here: nothing to load
        assert not runtime.preload_cuda([CUDA, CPU]) and calls == []
    (tmp_path / "nvidia").mkdir()  # what nvidia-*-cu13 wheels install: a namespace package
    monkeypatch.syspath_prepend(str(tmp_path))
    assert runtime.preload_cuda([CUDA, CPU]) and runtime.preload_cuda([TRT, CUDA, CPU])
    assert calls == [{"cuda": True, "cudnn": True, "msvc": False}]  # once per process
