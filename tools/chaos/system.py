"""The system under test: a registry, inference replicas and a gateway, each its own process.

Started the way `maas up` starts them (tools/processes.py: port 0, --port-file, a
log file each), with static backends so that a replica can be stopped, hung or
cut off and come back on the port the gateway knows. Every child holds a lifeline
(services/common/lifeline.py), so none outlives the harness, even one killed with
SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import NotFound
from services.registry.client import RegistryClient
from services.registry.transfer import plan_upload
from tools.chaos.hosts import NetnsHost
from tools.chaos.model import MODEL, write_model
from tools.demo.upload import version_files
from tools.processes import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
API = {
    "gateway": "inference.GRPCInferenceService",
    "inference": "inference.GRPCInferenceService",
    "registry": "maas.registry.v1.ModelRegistry",
}


class Service(ServiceProcess):
    """One service; on a NetnsHost when `host` is given."""

    def __init__(
        self,
        name: str,
        service: str,
        args: list[str],
        folder: Path,
        host: NetnsHost | None = None,
    ) -> None:
        self.name = name
        self.host = host
        super().__init__(
            service,
            args,
            log_path=folder / f"{name}.log",
            port_file=folder / f"{name}.port",
            env={"PYTHONUNBUFFERED": "1"},
            cwd=Path(__file__).resolve().parents[2],
        )

    def _command_prefix(self) -> list[str]:
        return self.host.exec_prefix() if self.host else []

    @property
    def address(self) -> str:
        host = self.host.address if self.host else "localhost"
        return f"{host}:{self.port}"

    def signal(self, signum: int) -> None:
        """Send `signum` to the service itself (after `ip netns exec`, that is the same pid)."""
        os.kill(self.pid, signum)

    async def wait_port(self, timeout: float = 120.0) -> int:
        """The bound port, once it is written; RuntimeError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while not (self.port_file.exists() and self.port_file.read_text().strip()):
            if not self.alive():
                code = self.process.returncode
                raise RuntimeError(f"{self.name} exited ({code}):\n{self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not bind in {timeout:.0f}s")
            await asyncio.sleep(0.05)
        self.port = int(self.port_file.read_text())
        return self.port

    async def wait_serving(self, service: str | None = None, timeout: float = 120.0) -> float:
        """Until health for `service` (default: its API) is SERVING; seconds it took."""
        start = time.monotonic()
        await self.wait_port(timeout)
        wanted = API[self.service] if service is None else service
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() - start < timeout:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited:\n{self.logs()[-3000:]}")
                try:
                    request = health_pb2.HealthCheckRequest(service=wanted)
                    reply = await stub.Check(request, timeout=1.0)
                    if reply.status == SERVING:
                        return time.monotonic() - start
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: {wanted} not SERVING in {timeout:.0f}s")


class System:
    """Registry, `replicas` inference processes (plus one on `netns_host`) and a gateway.

    With `generator` (name and built model directory of a generative model, such as
    the smollm2 demo), every replica serves that model too, for the stream load.
    """

    def __init__(
        self,
        folder: Path,
        replicas: int = 2,
        netns_host: NetnsHost | None = None,
        gateway_args: Sequence[str] = (),
        generator: tuple[str, Path] | None = None,
    ) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._replica_count = replicas
        self.netns_host = netns_host
        self._gateway_args = list(gateway_args)
        self.generator = generator
        self.registry: Service | None = None
        self.replicas: list[Service] = []
        self.gateway: Service | None = None

    @property
    def services(self) -> list[Service]:
        found = [self.registry, *self.replicas, self.gateway]
        return [s for s in found if s is not None]

    async def start(self) -> None:
        """Each service healthy before the next; v1 of the model registered as production."""
        self.registry = Service(
            "registry",
            "registry",
            ["--data-dir", str(self.folder / "registry"), "--no-auth"],
            self.logs,
        )
        await self.registry.wait_serving()
        await self.register(alias="production")
        if self.generator is not None:
            await self._register_generator(*self.generator)
        hosts: list[NetnsHost | None] = [None] * self._replica_count
        if self.netns_host is not None:
            hosts.append(self.netns_host)
        for i, host in enumerate(hosts):
            # The host in the namespace reaches the registry over the veth pair.
            registry = f"{host.gateway if host else 'localhost'}:{self.registry.port}"
            name = f"inference-{i + 1}" + ("-netns" if host else "")
            args = ["--registry", registry, "--cache-dir", str(self.folder / "cache" / name)]
            if host is not None:
                args += ["--host", "0.0.0.0"]
            self.replicas.append(Service(name, "inference", args, self.logs, host))
        for replica in self.replicas:
            await self.wait_models(replica)
        backends = ",".join(r.address for r in self.replicas)
        self.gateway = Service(
            "gateway",
            "gateway",
            [
                "--registry",
                self.registry.address,
                "--backends",
                backends,
                "--no-auth",
                *self._gateway_args,
            ],
            self.logs,
        )
        await self.gateway.wait_serving()

    async def register(self, alias: str = "") -> int:
        """Upload the next version of the model (it adds its own number); that number."""
        assert self.registry is not None
        async with RegistryClient(self.registry.address) as client:
            try:
                known = (await client.list_versions(MODEL)).items
            except NotFound:
                known = []
            version = max((v.version for v in known), default=0) + 1
            path = write_model(self.folder / "models", version)
            created = await client.upload_files(MODEL, plan_upload(path), alias=alias)
        if created.version != version:
            raise RuntimeError(f"registered {MODEL} v{created.version}, expected v{version}")
        return version

    @property
    def models(self) -> list[str]:
        """What every replica serves."""
        return [MODEL] + ([self.generator[0]] if self.generator else [])

    async def wait_models(self, replica: Service) -> float:
        """Until `replica` serves every model; seconds it took."""
        start = time.monotonic()
        for model in self.models:
            await replica.wait_serving(model)
        return time.monotonic() - start

    async def _register_generator(self, name: str, model_dir: Path) -> None:
        assert self.registry is not None
        config = model_dir / "config.yaml"
        async with RegistryClient(self.registry.address) as client:
            await client.upload_files(
                name,
                version_files(model_dir),
                alias="production",
                config=config.read_text() if config.is_file() else "",
            )

    async def set_alias(self, alias: str, version: int) -> None:
        assert self.registry is not None
        async with RegistryClient(self.registry.address) as client:
            await client.set_alias(MODEL, alias, version)

    async def restart(self, service: Service) -> float:
        """Start an exited service again on its port; seconds until it is SERVING (a
        replica: until it serves every model)."""
        service.restart()
        if service in self.replicas:
            start = time.monotonic()
            await service.wait_port()
            await self.wait_models(service)
            return time.monotonic() - start
        return await service.wait_serving()

    def stop(self) -> None:
        """SIGCONT (a hung one cannot drain), then SIGTERM everything, gateway first."""
        for service in reversed(self.services):
            if service.alive():
                service.signal(signal.SIGCONT)
                service.terminate()
        for service in reversed(self.services):
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
