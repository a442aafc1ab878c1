"""Servers the benchmark starts for itself: maas inference (with a generated
config.yaml), and the peers, each a process on port 0 or a port it was given."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """A server process with its log; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"maas-bench-{name}-"))
        self.log_path = self.workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.address = ""
        self.http_address = ""  # host:port of an HTTP front end, where it has one

    @property
    def pid(self) -> int:
        """The server's process id, for its CPU time."""
        return self.process.pid

    def logs(self) -> str:
        """The last part of what it printed."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def check_alive(self) -> None:
        """RuntimeError with its log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.logs()}")

    def stop(self) -> None:
        """Terminate, and kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def model_repository(model: str, onnx_path: Path, config: dict[str, object], root: Path) -> Path:
    """`root/<model>/1/model.onnx` (a link to the file) with `config.yaml` beside it."""
    version = root / model / "1"
    version.mkdir(parents=True, exist_ok=True)
    link = version / "model.onnx"
    if not link.exists():
        link.symlink_to(onnx_path.resolve())
    (root / model / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def start_inference(
    model: str,
    onnx_path: Path,
    config: dict[str, object],
    timeout: float = 120,
    extra: Sequence[str] = (),
) -> Process:
    """maas-inference on port 0 over a one-model repository with `config`; `extra`:
    more flags (--workers 2 ...)."""
    root = Path(tempfile.mkdtemp(prefix="maas-bench-repo-"))
    model_repository(model, onnx_path, config, root)
    return start_inference_at(root, root / "port", timeout, extra)


def start_inference_at(
    root: Path, port_file: Path, timeout: float = 120, extra: Sequence[str] = ()
) -> Process:
    """maas-inference on port 0 (metrics too) over the repository `root`, its gRPC port
    read from `port_file` once it listens."""
    command = [
        sys.executable,
        "-m",
        "services.inference.main",
        "--model-repository",
        str(root),
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--port-file",
        str(port_file),
        "--log-level",
        "WARNING",
        *extra,
    ]
    server = Process("inference", command)
    server.address = f"127.0.0.1:{wait_for_file(port_file, server, timeout)}"
    return server


def wait_for_file(path: Path, server: Process, timeout: float) -> int:
    """The port a server wrote to `path` once it was serving."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        server.check_alive()
        time.sleep(0.05)
    server.stop()
    raise TimeoutError(f"{server.name} did not start in {timeout}s:\n{server.logs()}")


def free_port() -> int:
    """A port that was free a moment ago, for servers that cannot report the one they
    bound (Triton, KServe): they need fixed ports on the command line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_grpc_ready(address: str, model: str, server: Process, timeout: float = 180) -> None:
    """Poll ModelReady until the model answers ready."""
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"{server.name} was not ready in {timeout}s:\n{server.logs()}")


def batching_config(enabled: bool, max_batch_size: int = 64) -> dict[str, object]:
    """The config.yaml of a benchmark run: batching on (the defaults) or off."""
    return {"dynamic_batching": {"enabled": enabled, "max_batch_size": max_batch_size}}


def start_gateway(
    backends: Sequence[str], timeout: float = 60, extra: Sequence[str] = ()
) -> Process:
    """maas-gateway on port 0 in front of `backends`, without API keys; its HTTP
    front end on port 0 too (`http_address`). `extra`: more flags (--tls-cert ...)."""
    workdir = Path(tempfile.mkdtemp(prefix="maas-bench-gateway-"))
    port_file, http_port_file = workdir / "port", workdir / "http-port"
    command = [
        sys.executable,
        "-m",
        "services.gateway.main",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--port-file",
        str(port_file),
        "--http-port",
        "0",
        "--http-port-file",
        str(http_port_file),
        "--backends",
        ",".join(backends),
        "--no-auth",
        "--log-level",
        "WARNING",
        *extra,
    ]
    server = Process("gateway", command)
    server.address = f"127.0.0.1:{wait_for_file(port_file, server, timeout)}"
    server.http_address = f"127.0.0.1:{wait_for_file(http_port_file, server, timeout)}"
    return server
