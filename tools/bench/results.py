"""Where a run's numbers were taken, and writing its results JSON and plot."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from tools.bench.plot import plot


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    import grpc
    import onnxruntime

    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def write(document: dict[str, Any], out: Path, name: str = "") -> tuple[Path, Path]:
    """`out/<name or UTC date-time>.json` and `.png`."""
    stamp = name or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stamp}.json", out / f"{stamp}.png"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    from tools.bench.stats import series_from_document

    cpus = document["machine"].get("cpus")
    plot(series_from_document(document), png_path, f"maas bench, {cpus} cores, {stamp}")
    return json_path, png_path
