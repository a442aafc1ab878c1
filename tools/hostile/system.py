"""The system under attack: `maas up` as processes, on port 0, with a second model.

Started through tools/up.py's own `start()`, so the suite sees what a user runs
(loopback binding, credentials between services) as that code changes. With
`auth`, the gateway gets a keys file of two keys: one for every model, one limited
to OTHER_MODEL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras
import yaml

from tools.up import DEMO_MODEL, Process, Secrets
from tools.up import start as up_start

OTHER_MODEL = "othermodel"
# y = x + 1 over [batch, OTHER_WIDTH]: its answers are as large as its requests (128 KiB
# a batch of 32), so that a stream that never reads has answers to hold.
OTHER_WIDTH = 1024
FULL_KEY = "hostile-full-key-0123456789"
LIMITED_KEY = "hostile-limited-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]
HTTP_PORT_ENV = "MAAS_GATEWAY_HTTP_PORT"
DIGITS_CACHE = ROOT / ".data" / "hostile" / "digits"


def write_other_model(folder: Path) -> Path:
    """model.onnx of OTHER_MODEL under `folder`."""
    import numpy as np
    import onnx
    import onnx.helper as oh
    from onnx import TensorProto, numpy_helper

    one = numpy_helper.from_array(np.ones((OTHER_WIDTH,), np.float32), "one")
    graph = oh.make_graph(
        [oh.make_node("Add", ["x", "one"], ["y"])],
        OTHER_MODEL,
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", OTHER_WIDTH])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OTHER_WIDTH])],
        initializer=[one],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    path = folder / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def digits_export() -> Path:
    """The digits demo exported once (8 s of training) and kept under .data/hostile."""
    path = DIGITS_CACHE / "model.onnx"
    if not path.is_file():
        from tools.digits import train_and_export

        train_and_export(path, holdout_path=path.with_name("holdout.npz"))
    return path.parent


@dataclass
class HostileSystem:
    """A running system: its processes, addresses and credentials."""

    data: Path
    auth: bool
    processes: dict[str, Process]
    secrets: Secrets | None
    metrics_ports: dict[str, int] = field(default_factory=dict)
    http_ports: dict[str, int] = field(default_factory=dict)

    def address(self, name: str) -> str:
        return self.processes[name].address

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    @property
    def services(self) -> list[str]:
        return list(self.processes)

    def client_metadata(self, limited: bool = False) -> tuple[tuple[str, str], ...]:
        """What a well-behaved gateway client sends (nothing without auth)."""
        if not self.auth:
            return ()
        return (("authorization", f"Bearer {LIMITED_KEY if limited else FULL_KEY}"),)

    def inference_metadata(self) -> tuple[tuple[str, str], ...]:
        """The credential the gateway uses towards inference, where the system has one."""
        token = getattr(self.secrets, "inference_token", None) or getattr(
            self.secrets, "service_token", None
        )
        return (("authorization", f"Bearer {token}"),) if token else ()

    @property
    def admin_token(self) -> str | None:
        return self.secrets.admin_token if self.secrets else None

    def server_paths(self) -> list[str]:
        """Paths whose appearance in a client-visible message is a leak."""
        return [str(self.data), str(self.data.resolve()), str(ROOT), "/tmp/", "site-packages"]

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()


def _serves_metrics(port: int, service: str) -> bool:
    """Whether `port` is the service's Prometheus /metrics."""
    from tools.hostile.metrics import scrape

    try:
        return f"maas_{service}_" in scrape(port)
    except OSError:
        return False


def _listening_ports(pid: int) -> set[int]:
    ports = set()
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr:
            ports.add(conn.laddr.port)
    return ports


def _start(folder: Path, auth: bool) -> HostileSystem:
    data = folder / ("auth" if auth else "open")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(digits_export(), data / "models" / DEMO_MODEL)
    keys_file = None
    if auth:
        keys_file = data / "hostile-keys.yaml"
        keys = [
            {"id": "hostile-full", "key": FULL_KEY},
            {"id": "hostile-limited", "key": LIMITED_KEY, "models": [OTHER_MODEL]},
        ]
        keys_file.write_text(yaml.safe_dump({"keys": keys}))
    args = argparse.Namespace(
        data_dir=str(data),
        auth=auth,
        api_keys_file=str(keys_file) if keys_file else None,
        otlp_endpoint=None,
        gateway_port=0,
        registry_port=0,
        inference_port=0,
        inference_replicas=1,
        ports_file=None,
        log_level="INFO",
    )
    # maas up gives the gateway's HTTP port no flag: port 0 here too, so runs never collide.
    saved = os.environ.get(HTTP_PORT_ENV)
    os.environ[HTTP_PORT_ENV] = "0"
    try:
        processes, creds = up_start(args)
    finally:
        if saved is None:
            os.environ.pop(HTTP_PORT_ENV, None)
        else:
            os.environ[HTTP_PORT_ENV] = saved
    system = HostileSystem(data, auth, {p.name: p for p in processes}, creds)
    try:
        from tools.models import upload_file

        path = write_other_model(data / "models" / OTHER_MODEL)
        upload_file(system.address("registry"), system.admin_token, OTHER_MODEL, path, "production")
        for name, process in system.processes.items():
            for port in sorted(_listening_ports(process.pid) - {process.port}):
                if _serves_metrics(port, name):
                    system.metrics_ports[name] = port
                else:  # the gateway's HTTP front door (issue C)
                    system.http_ports[name] = port
    except BaseException:
        system.stop()
        raise
    return system


async def start_system(folder: Path, auth: bool) -> HostileSystem:
    """Start it off the event loop (tools/up.py waits synchronously)."""
    system = await asyncio.to_thread(_start, folder, auth)
    await wait_model_ready(system, OTHER_MODEL)
    return system


async def wait_model_ready(system: HostileSystem, model: str, timeout: float = 60.0) -> None:
    """Until the gateway says `model` is ready (inference follows the registry)."""
    import grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with grpc.aio.insecure_channel(system.address("gateway")) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                reply = await stub.ModelReady(
                    pb.ModelReadyRequest(name=model),
                    metadata=system.client_metadata(),
                    timeout=2.0,
                )
                if reply.ready:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise RuntimeError(f"{model} not ready through the gateway in {timeout:.0f}s")
            await asyncio.sleep(0.2)
