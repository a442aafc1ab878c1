"""Measuring one level of one target: over gRPC (any v2 server), or ONNX Runtime
in this process (the physical limit of the model on this machine)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from tools.bench.cpu import hops_cpu_seconds, spent
from tools.bench.http_load import HttpBody, HttpLoadSpec, run_http_load
from tools.bench.loadgen import LoadResult, LoadSpec, run_load
from tools.bench.stats import Level, cpu_per_request_us, summarize

_log = logging.getLogger("tools.bench")


def server_counts(address: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) from ModelStatistics, if the server has them."""
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=5)
    except grpc.RpcError:
        return None
    if not reply.model_stats:
        return None
    inferences = sum(s.inference_count for s in reply.model_stats)
    executions = sum(s.execution_count for s in reply.model_stats)
    return inferences, executions


def grpc_level(
    address: str,
    model: str,
    payloads: Sequence[bytes],
    concurrency: int,
    seconds: float,
    *,
    rows: int = 1,
    processes: int = 2,
    server_pids: Sequence[int] = (),
    stats_address: str | None = None,
    hops: Mapping[str, Sequence[int]] | None = None,
) -> Level:
    """One level against a v2 gRPC server, with the server's effective batch size and
    CPU use where they can be read: `hops` names the processes of each hop a request
    crosses (else `server_pids` count as one hop, "server")."""
    spec = LoadSpec(address, tuple(payloads), concurrency, seconds, processes=processes)
    stats_at = stats_address or address
    return _served_level(
        partial(run_load, spec),
        spec.seconds,
        concurrency,
        model,
        stats_at,
        rows,
        _hops(hops, server_pids),
    )


def http_level(
    url: str,
    model: str,
    bodies: Sequence[HttpBody],
    concurrency: int,
    seconds: float,
    *,
    stats_address: str,
    rows: int = 1,
    processes: int = 2,
    server_pids: Sequence[int] = (),
    hops: Mapping[str, Sequence[int]] | None = None,
) -> Level:
    """One level against a v2 REST infer URL; the statistics are read over gRPC at
    `stats_address` (the gateway's backend)."""
    spec = HttpLoadSpec(url, tuple(bodies), concurrency, seconds, processes=processes)
    load = partial(run_http_load, spec)
    return _served_level(
        load, spec.seconds, concurrency, model, stats_address, rows, _hops(hops, server_pids)
    )


def _hops(
    hops: Mapping[str, Sequence[int]] | None, server_pids: Sequence[int]
) -> Mapping[str, Sequence[int]]:
    if hops is not None:
        return {hop: pids for hop, pids in hops.items() if pids}
    return {"server": server_pids} if server_pids else {}


def _served_level(
    load: Callable[[], LoadResult],
    seconds: float,
    concurrency: int,
    model: str,
    stats_at: str,
    rows: int,
    hops: Mapping[str, Sequence[int]],
) -> Level:
    before = server_counts(stats_at, model)
    cpu_before = hops_cpu_seconds(hops) if hops else None
    started = time.monotonic()
    result = load()
    elapsed = time.monotonic() - started
    cpu_after = hops_cpu_seconds(hops) if hops else None
    after = server_counts(stats_at, model)
    effective = None
    if before and after and after[1] > before[1]:
        effective = round((after[0] - before[0]) / (after[1] - before[1]), 2)
    server_cpu = None
    per_request: dict[str, float] = {}
    if cpu_before is not None and cpu_after is not None:
        used = spent(cpu_before, cpu_after)
        # Cores: over the whole load (spawn and warm-up included), a slight underestimate.
        server_cpu = round(sum(used.values()) / elapsed, 2)
        # Per request: the same CPU over every request the load completed, warm-up
        # included, so that both sides of the division cover the same time.
        per_request = cpu_per_request_us(used, result.completed)
    return summarize(
        concurrency,
        result.latencies,
        seconds,
        rows_per_request=rows,
        errors=sum(result.errors.values()),
        error_codes=result.errors,
        effective_batch=effective,
        loadgen_cpu=round(result.cpu_cores, 2),
        server_cpu=server_cpu,
        cpu_us_per_request=per_request,
        completed=result.completed,
    )


def ort_session(path: Path, threads: int | None = None) -> object:
    """A CPU session with every core, as a program calling ONNX Runtime directly would."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_level(
    session: object,
    inputs: dict[str, np.ndarray],
    batch: int,
    concurrency: int,
    seconds: float,
) -> Level:
    """ONNX Runtime called in a loop at `batch` rows per call, no serving around it.

    `concurrency` only labels the level: it is the level of the served targets whose
    effective batch size this one reproduces.
    """
    feed = {name: np.repeat(array, batch, axis=0) for name, array in inputs.items()}
    run = session.run  # type: ignore[attr-defined]
    run(None, feed)
    latencies: list[float] = []
    started = time.perf_counter()
    end = started + seconds
    while (now := time.perf_counter()) < end:
        run(None, feed)
        latencies.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - started
    rows = next(iter(inputs.values())).shape[0]
    # Throughput in requests of the served targets' size: rows per call / rows per request.
    level = summarize(concurrency, latencies, elapsed, rows_per_request=batch * rows)
    calls_per_s = len(latencies) / elapsed
    return Level(
        **{
            **level.__dict__,
            "throughput": round(calls_per_s * batch, 2),
            "effective_batch": float(batch),
        }
    )
