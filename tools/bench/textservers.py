"""The served side of the text benchmarks: demo models built once under the data
directory, one inference service over them and a gateway in front, each a process
on port 0 (or the addresses of running ones)."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench.servers import (
    ROOT,
    Process,
    start_gateway,
    start_inference_at,
    wait_for_grpc_ready,
)

# Where the tests build the demo models too, so one build serves both.
DEMO_MODELS = ROOT / ".data" / "demo-models"


def demo_model(name: str, models_dir: Path = DEMO_MODELS) -> Path:
    """`models_dir/<name>`, built by tools.demo.<name> unless it is current."""
    model_dir = models_dir / name
    importlib.import_module(f"tools.demo.{name}").build(model_dir)
    return model_dir


def start_inference_over(models: dict[str, Path], timeout: float = 300) -> Process:
    """maas-inference on port 0 over a repository linking each model directory."""
    root = Path(tempfile.mkdtemp(prefix="maas-bench-text-"))
    for name, model_dir in models.items():
        (root / name).symlink_to(model_dir.resolve(), target_is_directory=True)
    server = start_inference_at(root, root.parent / f"{root.name}.port", timeout)
    for name in models:
        wait_for_grpc_ready(server.address, name, server, timeout)
    return server


@dataclass
class Served:
    """Where the served target answers, and the processes whose CPU it costs."""

    gateway: str
    pids: list[int]
    inference: str = ""  # the backend's address, when started here
    inference_pid: int = 0


def serve(models: dict[str, Path], stack: ExitStack, gateway: str | None = None) -> Served:
    """A gateway address in front of the models: the one given, or a fresh
    inference service and gateway (stopped when `stack` closes)."""
    if gateway:
        return Served(gateway, [])
    inference = start_inference_over(models)
    stack.callback(inference.stop)
    front = start_gateway([inference.address])
    stack.callback(front.stop)
    for name in models:
        wait_for_grpc_ready(front.address, name, front)
    return Served(front.address, [inference.pid, front.pid], inference.address, inference.pid)


def write_results(document: dict[str, Any], out: Path, name: str | None, kind: str) -> Path:
    """`out/<name>-<kind>.json` (name: the UTC time when none is given), printed."""
    name = name or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{kind}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
    return path
