"""Sections 1, 2, 3, 5 and 6: in this process, straight on ONNX Runtime and maas's runtime."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.gpu_smoke.report import Failed, Skip

_log = logging.getLogger("gpu_smoke")
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass
class Context:
    """What every section shares: the output folder, the models, the options."""

    out: Path
    model: Path  # a small CNN (tools.gpu_check.conv_model), dynamic batch, FP32
    quick: bool
    seconds: float
    efficientnet: Path | None = None  # a built tools/demo efficientnet model directory
    device_id: int = 0

    @property
    def providers(self) -> list[str]:
        import onnxruntime as ort

        return list(ort.get_available_providers())

    @property
    def cuda(self) -> bool:
        return CUDA in self.providers

    def need_cuda(self) -> None:
        if not self.cuda:
            raise Skip(f"no CUDA: this ONNX Runtime has only {self.providers}")


def versions(ctx: Context, data: dict[str, Any]) -> None:
    """1. Versions, providers and devices."""
    import onnxruntime as ort

    data["python"] = sys.version.split()[0]
    data["platform"] = platform.platform()
    data["onnxruntime"] = ort.__version__
    data["onnxruntime_device"] = ort.get_device()
    data["providers"] = ctx.providers
    data["preload_dlls"] = hasattr(ort, "preload_dlls")
    packages = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(("nvidia-", "onnxruntime", "tensorrt")):
            packages[name] = dist.version
    data["packages"] = dict(sorted(packages.items()))
    if hasattr(ort, "get_ep_devices"):
        data["ep_devices"] = [
            {"ep": d.ep_name, "vendor": d.ep_vendor, "type": str(d.device.type)}
            for d in ort.get_ep_devices()
        ]
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "index,uuid,name,memory.total,driver_version,pci.bus_id"
        done = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        data["nvidia_smi"] = done.stdout.strip().splitlines() or done.stderr.strip()
    data["nvml"] = nvml_devices()


def nvml_devices() -> list[dict[str, Any]] | str:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"NVML not available: {exc}"
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        devices.append(
            {
                "index": index,
                "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                "total_bytes": int(memory.total),
                "used_bytes": int(memory.used),
            }
        )
    return devices


def placement(ctx: Context, data: dict[str, Any]) -> None:
    """2. Where ORT placed the nodes, per GPU provider, with its fallbacks off."""
    from services.inference.config import ModelConfig
    from services.inference.runtime import LoadError, cpu_compute_nodes, create_session
    from services.inference.runtime import placement as nodes_per_ep

    ctx.need_cuda()
    models = {"conv": ctx.model}
    if ctx.efficientnet is not None:
        models["efficientnet"] = ctx.efficientnet / "1" / "model.onnx"
    problems = []
    for provider in [p for p in (CUDA, TRT) if p in ctx.providers]:
        alias = "cuda" if provider == CUDA else "tensorrt"
        for label, path in models.items():
            config = ModelConfig(providers=(alias,), cuda={"device_id": ctx.device_id})
            key = f"{alias}/{label}"
            try:
                session = create_session(path, config)
            except LoadError as exc:
                data[key] = {"error": str(exc)}
                problems.append(f"{key}: {exc}")
                continue
            on_cpu = cpu_compute_nodes(session)
            data[key] = {
                "active": session.get_providers(),
                "nodes": nodes_per_ep(session),
                "cpu_compute_nodes": on_cpu,
            }
            if on_cpu:
                problems.append(f"{key}: compute nodes on the CPU {on_cpu}")
    if problems:
        raise Failed("; ".join(problems))


def pinned(ctx: Context, data: dict[str, Any]) -> None:
    """3. Whether a pinned host allocation really works (not whether the API exists)."""
    from services.inference.binding import PinnedAllocator, accepts_memory_info, pinned_memory_info

    data["accepts_memory_info"] = accepts_memory_info()
    ctx.need_cuda()
    info = pinned_memory_info(ctx.device_id)
    data["memory_info"] = str(info)
    allocate = PinnedAllocator(info)
    data["pinned"] = allocate.available
    data["reason"] = allocate.reason
    if not allocate.available:
        raise Failed(f"no pinned host memory: {allocate.reason}")
    array = allocate((32, 3, 224, 224), np.dtype(np.float32))
    array[...] = 1.0
    data["checked_bytes"] = int(array.nbytes)


def require_cuda(ctx: Context, data: dict[str, Any]) -> None:
    """5. require_cuda's failure paths, and a device_id that does not exist."""
    from services.inference.config import ModelConfig
    from services.inference.runtime import LoadError, create_session

    def attempt(key: str, config: ModelConfig, should_fail: bool) -> None:
        try:
            session = create_session(ctx.model, config)
        except LoadError as exc:
            outcome = {"loaded": False, "reason": str(exc)}
        else:
            outcome = {"loaded": True, "active": session.get_providers()}
        outcome["expected"] = "LoadError" if should_fail else "loaded"
        outcome["as_expected"] = outcome["loaded"] != should_fail
        data[key] = outcome

    no_cuda = not ctx.cuda
    attempt("cuda_required", ModelConfig(providers=("cuda",), require_cuda=True), no_cuda)
    attempt("auto_required", ModelConfig(require_cuda=True), no_cuda)
    if ctx.cuda:
        missing = {"device_id": 99}
        config = ModelConfig(providers=("cuda",), require_cuda=True, cuda=missing)
        attempt("device_99_required", config, True)
        # Without require_cuda it must fail too: ORT's retry on the CPU is off.
        attempt("device_99", ModelConfig(providers=("cuda",), cuda=missing), True)
        strict = ModelConfig(providers=("cuda",), cuda={"strict": True})
        attempt("strict", strict, False)
        data["strict"]["as_expected"] = True  # informative: some models cannot be strict
    wrong = [key for key, value in data.items() if not value["as_expected"]]
    if wrong:
        raise Failed(f"not as expected: {', '.join(wrong)}")
    if no_cuda:
        raise Skip("no CUDA: only the no-CUDA refusals were checked (both refused)")


def memory(ctx: Context, data: dict[str, Any]) -> None:
    """6. GPU memory in use after runs at batch sizes 1..32 (NVML, the session's device)."""
    from services.inference.config import ModelConfig
    from services.inference.model import make_runner
    from services.inference.runtime import create_session, runner_plan, signature_of, zeros_for

    ctx.need_cuda()
    devices = nvml_devices()
    if isinstance(devices, str):
        raise Skip(devices)
    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(ctx.device_id)

    def used() -> int:
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

    path = ctx.efficientnet / "1" / "model.onnx" if ctx.efficientnet else ctx.model
    data["model"] = str(path.name if not ctx.efficientnet else "efficientnet")
    data["before_bytes"] = used()
    config = ModelConfig(providers=("cuda",), require_cuda=True, cuda={"device_id": ctx.device_id})
    session = create_session(path, config)
    signature = signature_of(session)
    runner = make_runner(
        session, signature, runner_plan(session.get_providers(), config, signature)
    )
    data["after_load_bytes"] = used()
    rows = {}
    for batch in (1, 2, 4, 8, 16, 32):
        inputs = {}
        for spec in signature.inputs:
            one = zeros_for(spec)
            inputs[spec.name] = np.repeat(one, batch, axis=0)
        runner(inputs)
        rows[str(batch)] = used()
    data["after_batch_bytes"] = rows
    data["note"] = "NVML's device index is assumed to be CUDA's (check uuids in section 1)"
