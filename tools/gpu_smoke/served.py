"""Sections 4 and 7: through a real inference service (a child process, real gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tools.gpu_smoke.report import Failed, Skip
from tools.gpu_smoke.sections import Context

SERVED = "smoke"


def repository(ctx: Context, name: str, model: Path, config: str) -> Path:
    """A one-model repository under the output folder: `<name>/smoke/1/model.onnx`."""
    root = ctx.out / name
    version = root / SERVED / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, version / "model.onnx")
    (root / SERVED / "config.yaml").write_text(config)
    return root


@contextlib.contextmanager
def service(ctx: Context, root: Path) -> Iterator[str]:
    """maas-inference on `root`, on a free port; yields host:port and stops it."""
    from tools.processes import ServiceProcess

    process = ServiceProcess(
        "inference",
        ["--model-repository", str(root)],
        log_path=ctx.out / f"inference-{root.name}.log",
        port_file=ctx.out / f"inference-{root.name}.port",
    )
    try:
        process.wait_for_port(timeout=300)
        yield process.address
    finally:
        process.stop()


def provider_config(ctx: Context) -> str:
    if ctx.cuda:
        return f"providers: [cuda]\nrequire_cuda: true\ncuda: {{device_id: {ctx.device_id}}}\n"
    return "providers: [cpu]\n"


def model_for_figures(ctx: Context) -> tuple[str, Path]:
    if ctx.efficientnet is not None:
        return "efficientnet-lite0", ctx.efficientnet / "1" / "model.onnx"
    return "conv (EfficientNet-Lite0 not built: pass --efficientnet DIR)", ctx.model


async def _statistics(address: str) -> tuple[int, int]:
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=SERVED))
    stats = reply.model_stats[0]
    return int(stats.execution_count), int(stats.inference_count)


async def _infer_all(address: str, requests: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every request at once (so they queue and merge); each reply's first output."""
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.datatypes import by_name
    from tools.bench.models import infer_request

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        raw = await asyncio.gather(*(call(infer_request(SERVED, r), timeout=120) for r in requests))
    del pb_grpc
    outputs = []
    for data in raw:
        reply = pb.ModelInferResponse.FromString(data)
        out = reply.outputs[0]
        dtype = by_name(out.datatype, tensor=out.name).numpy
        outputs.append(np.frombuffer(reply.raw_output_contents[0], dtype).reshape(out.shape))
    return outputs


def service_path(ctx: Context, data: dict[str, Any]) -> None:
    """4. Outputs through the service (merged batches, 2 instance threads) vs CPU ORT."""
    import onnxruntime as ort

    from tools.bench.models import sample_inputs

    label, model = model_for_figures(ctx)
    data["model"] = label
    data["provider"] = "cuda" if ctx.cuda else "cpu"
    config = provider_config(ctx) + (
        "instances: 2\ndynamic_batching: {max_batch_size: 16, max_queue_delay_us: 20000}\n"
    )
    requests = [sample_inputs(model, rows=1 + i % 3, seed=i) for i in range(24)]
    cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = [cpu.run(None, r)[0] for r in requests]
    with service(ctx, repository(ctx, "service-path", model, config)) as address:
        got = asyncio.run(_infer_all(address, requests))
        executions, inferences = asyncio.run(_statistics(address))
    errors = [float(np.max(np.abs(w - g))) for w, g in zip(want, got, strict=True)]
    scale = max(1.0, max(float(np.max(np.abs(w))) for w in want))
    data["max_abs_error"] = max(errors)
    data["executions"], data["rows"] = executions, inferences
    limit = (1e-2 if ctx.cuda else 1e-5) * scale
    if max(errors) > limit:
        raise Failed(f"served outputs differ from CPU ORT by {max(errors):.3g} (> {limit:.3g})")
    if executions >= len(requests):
        raise Failed(f"no request merged: {executions} executions for {len(requests)} requests")
    if not ctx.cuda:
        raise Skip("no CUDA: the service path was checked on CPU only (outputs equal, merged)")


def _level(address: str, payloads: tuple[bytes, ...], seconds: float) -> dict[str, Any]:
    from tools.bench.loadgen import LoadSpec, run_load

    before = asyncio.run(_statistics(address))
    spec = LoadSpec(address, payloads, concurrency=32, seconds=seconds, warmup=1.0)
    result = run_load(spec)
    after = asyncio.run(_statistics(address))
    latencies = sorted(result.latencies)
    executions = after[0] - before[0]
    return {
        "requests_per_s": round(len(latencies) / result.window, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2)
        if latencies
        else None,
        "effective_batch": round((after[1] - before[1]) / executions, 2) if executions else None,
        "errors": result.errors,
    }


def _in_process(path: Path, ctx: Context, batch: int, bound: bool) -> float:
    """Rows per second of ORT called in a loop at `batch` rows, as the service creates it."""
    from services.inference.config import ModelConfig
    from services.inference.model import make_runner
    from services.inference.runtime import create_session, runner_plan, signature_of
    from tools.bench.models import sample_inputs

    alias = "cuda" if ctx.cuda else "cpu"
    config = ModelConfig(providers=(alias,), cuda={"io_binding": bound, "device_id": ctx.device_id})
    session = create_session(path, config)
    signature = signature_of(session)
    runner = make_runner(
        session, signature, runner_plan(session.get_providers(), config, signature)
    )
    inputs = sample_inputs(path, rows=batch)
    allocate = getattr(runner, "allocate", None)
    if allocate is not None:  # staged as the batcher stages merged batches
        staged = {}
        for name, array in inputs.items():
            staged[name] = allocate(array.shape, array.dtype)
            staged[name][...] = array
        inputs = staged
    for _ in range(3):
        runner(inputs)
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < ctx.seconds or calls < 3:
        runner(inputs)
        calls += 1
    return round(calls * batch / elapsed, 1)


def figures(ctx: Context, data: dict[str, Any], on_cpu: bool = False) -> None:
    """7. Goal 4: batching on vs off at c=32, served vs in-process ORT at the same batch."""
    from tools.bench.models import infer_request, sample_inputs

    if not on_cpu:
        ctx.need_cuda()
    label, model = model_for_figures(ctx)
    data["model"], data["concurrency"], data["seconds"] = label, 32, ctx.seconds
    data["provider"] = "cuda" if ctx.cuda else "cpu"
    payloads = tuple(infer_request(SERVED, sample_inputs(model, 1, seed)) for seed in range(8))
    base = provider_config(ctx)
    configs = {
        "batching_on": base + "dynamic_batching: {max_batch_size: 32}\n",
        "batching_off": base + "dynamic_batching: {enabled: false}\n",
    }
    for key, config in configs.items():
        with service(ctx, repository(ctx, key, model, config)) as address:
            data[key] = _level(address, payloads, ctx.seconds)
    batch = max(1, round(data["batching_on"]["effective_batch"] or 1))
    data["in_process_batch"] = batch
    data["in_process_rows_per_s"] = _in_process(model, ctx, batch, bound=False)
    data["in_process_iobinding_rows_per_s"] = _in_process(model, ctx, batch, bound=True)
    on, off = data["batching_on"]["requests_per_s"], data["batching_off"]["requests_per_s"]
    data["ratio_batching_on_off"] = round(on / off, 2) if off else None
    inproc = data["in_process_iobinding_rows_per_s"]
    data["ratio_served_vs_in_process"] = round(on / inproc, 3) if inproc else None
