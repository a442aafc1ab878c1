"""Starting the peers (PyTriton, KServe) on the same ONNX model, each from its venv."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.bench.servers import ROOT, Process, free_port, wait_for_grpc_ready

PEERS = ("pytriton", "kserve")
SCRIPTS = ROOT / "tools" / "bench" / "peer_servers"


def venv_python(peer: str) -> Path:
    """The peer venv's interpreter; FileNotFoundError naming the setup step if missing."""
    python = ROOT / ".bench" / peer / "bin" / "python"
    if not (ROOT / ".bench" / peer / ".installed").exists():
        raise FileNotFoundError(f"{python} is not built: run tools/bench/venvs.sh {peer}")
    return python


def start_peer(peer: str, model: str, onnx_path: Path, max_batch_size: int = 64) -> Process:
    """The peer serving `onnx_path` as `model` over v2 gRPC, ready to take load."""
    python = venv_python(peer)
    grpc_port, http_port = free_port(), free_port()
    command = [
        str(python),
        str(SCRIPTS / f"{peer}_server.py"),
        "--model-path",
        str(onnx_path.resolve()),
        "--name",
        model,
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
    ]
    env: dict[str, str] = {}
    if peer == "pytriton":
        command += ["--metrics-port", str(free_port()), "--max-batch-size", str(max_batch_size)]
        # Triton's Python backend stub links libpython: the venv Python's own lib dir.
        libdir = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env["LD_LIBRARY_PATH"] = libdir
    server = Process(peer, command, env)
    server.address = f"127.0.0.1:{grpc_port}"
    server.http_address = f"127.0.0.1:{http_port}"
    wait_for_grpc_ready(server.address, model, server)
    return server
