"""perf_analyzer, Triton's own load generator, as the independent check.

The copy bundled in tritonclient 2.51.0 is the newest that runs on Debian 12's glibc;
it needs Debian's libb64 and the CUDA runtime library (from PyPI) on LD_LIBRARY_PATH,
even on CPU. `tools/bench/venvs.sh perf` builds its virtual environment.
"""

from __future__ import annotations

import csv
import os
import subprocess
import tempfile
from pathlib import Path

from tools.bench.stats import Level

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench" / "perf"


def binary(venv: Path = VENV) -> Path | None:
    """perf_analyzer in its venv, or None when the venv has not been built."""
    path = venv / "bin" / "perf_analyzer"
    return path if path.is_file() else None


def environment(venv: Path = VENV) -> dict[str, str]:
    """LD_LIBRARY_PATH with the CUDA runtime library the binary links against."""
    libs = sorted(str(p) for p in venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return {**os.environ, "LD_LIBRARY_PATH": ":".join([*libs, current] if current else libs)}


def command(
    exe: Path,
    address: str,
    model: str,
    concurrency: int,
    csv_path: Path,
    interval_ms: int,
    root_ca: Path | None = None,
) -> list[str]:
    """The perf_analyzer command line for one concurrency level over gRPC.

    With `root_ca`, the channel is TLS and the server's certificate is checked
    against that CA bundle; the server name is the host part of `address`."""
    tls = (
        ["--ssl-grpc-use-ssl", "true", "--ssl-grpc-root-certifications-file", str(root_ca)]
        if root_ca is not None
        else []
    )
    return [
        str(exe),
        "-m",
        model,
        "-u",
        address,
        "-i",
        "grpc",
        "-s",
        "50",  # stability threshold, percent
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(interval_ms),
        "--max-trials",
        "6",
        # Zeros are valid for every model here; random INT64 token ids would fall
        # outside the encoder's vocabulary and fail in its Gather.
        "--input-data",
        "zero",
        "-f",
        str(csv_path),
        *tls,
    ]


def parse_csv(text: str) -> list[Level]:
    """Levels from perf_analyzer's CSV report (latencies there are microseconds)."""
    levels = []
    for row in csv.DictReader(text.splitlines()):
        throughput = float(row["Inferences/Second"])
        levels.append(
            Level(
                concurrency=int(row["Concurrency"]),
                requests=0,
                errors=0,
                seconds=0.0,
                throughput=round(throughput, 2),
                rows_per_second=round(throughput, 2),
                latency_ms={
                    "p50": float(row["p50 latency"]) / 1000,
                    "p90": float(row["p90 latency"]) / 1000,
                    "p99": float(row["p99 latency"]) / 1000,
                    "mean": float(row.get("Avg latency") or row["p50 latency"]) / 1000,
                },
            )
        )
    return levels


def measure(
    address: str,
    model: str,
    concurrency: int,
    interval_ms: int = 3000,
    timeout: float = 180,
    root_ca: Path | None = None,
) -> tuple[Level | None, str]:
    """One level (over TLS with `root_ca`); (None, why) when perf_analyzer is missing or fails."""
    exe = binary()
    if exe is None:
        return None, "perf_analyzer is not installed: run tools/bench/venvs.sh perf"
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "perf.csv"
        cmd = command(exe, address, model, concurrency, csv_path, interval_ms, root_ca)
        try:
            done = subprocess.run(
                cmd, env=environment(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None, f"perf_analyzer timed out after {timeout}s"
        if done.returncode != 0 or not csv_path.exists():
            return None, f"perf_analyzer failed ({done.returncode}): {done.stdout[-1500:]}"
        levels = parse_csv(csv_path.read_text())
    return (levels[0], "") if levels else (None, "perf_analyzer wrote no results")
