"""`maas up`: registry, inference and gateway on this machine, as separate processes.

The embedded defaults: SQLite and a blob directory under the data folder, CPU
ONNX Runtime, and auth off unless `--auth`. The demo model `digits` is exported
from PyTorch and registered when the registry does not have it yet; so are the
large demos (tools/demo/: minilm embeddings, smollm2 chat, efficientnet images;
built from their packages once, about 1.5 minutes on 2 cores) unless `--no-large`.

The registry and inference listen on loopback only; the gateway is the one
service meant to be reached from elsewhere. With `--auth`, inference also asks for
a service token that only the gateway holds, so its port is no way around the keys.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.cli import CliError
from tools.processes import ServiceDied, ServiceProcess
from tools.up_banner import banner
from tools.up_plan import (
    DEMO_MODEL,
    Secrets,
    TlsFiles,
    gateway_args,
    inference_args,
    registry_args,
    secret_env,
    tls_args,
)

if TYPE_CHECKING:
    from services.common.tls_client import ClientTLS

MAX_RESTARTS = 5


# gRPC ports; each metrics port is its gRPC port plus 1000.
GATEWAY_PORT, REGISTRY_PORT, INFERENCE_PORT = 8001, 8011, 8021


class Process(ServiceProcess):
    """One service of `maas up`: its log under logs/, its port and pid under run/."""

    def __init__(
        self, service: str, name: str, port: int, args: list[str], env: dict[str, str], folder: Path
    ) -> None:
        # Called where it listens: its --host (loopback), else localhost.
        self.host = args[args.index("--host") + 1] if "--host" in args else "localhost"
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        (folder / "run").mkdir(parents=True, exist_ok=True)
        self.name = name
        self.restarts = 0
        self._pid_file = folder / "run" / f"{name}.pid"
        super().__init__(
            service,
            args,
            log_path=folder / "logs" / f"{name}.log",
            port_file=folder / "run" / f"{name}.port",
            port=port,
            metrics_port=port + 1000 if port else 0,
            env=env,
            new_session=True,
        )
        self._pid_file.write_text(f"{self.pid}\n")

    @property
    def address(self) -> str:
        """host:port of its gRPC server, on the address it listens on."""
        return f"{self.host}:{self.port}"

    def restart(self) -> None:
        """Start it again on the port it had, after it died."""
        self.restarts += 1
        super().restart()
        self._pid_file.write_text(f"{self.pid}\n")

    def died(self) -> CliError:
        """Why it exited: a port in use as one line naming `maas up`'s flag, else its log."""
        taken = re.search(r"port (\d+) is in use", self.logs()[-500:])
        if self.process.returncode == 2 and taken and "--http-port" in self.logs()[-500:]:
            return CliError(
                f"{self.name}: its HTTP port {taken[1]} is in use "
                "(change it with --gateway-http-port)"
            )
        if self.process.returncode == 2 and taken:
            port = int(taken[1])
            which = "its metrics port" if port == self.metrics_port and port else "port"
            return CliError(
                f"{self.name}: {which} {port} is in use "
                f"(change it with --{self.service}-port; metrics use that port + 1000)"
            )
        return CliError(f"{self.name} exited; its log ends:\n{self.logs()[-2000:]}")


# The health service that says a service can serve (not only that it is up).
READY_SERVICE = {
    "gateway": "inference.GRPCInferenceService",
    "inference": "inference.GRPCInferenceService",
    "registry": "maas.registry.v1.ModelRegistry",
}


def cli_tls(tls: TlsFiles | None) -> ClientTLS | None:
    """How `maas up` itself calls the services: with the CLI's cert, or plaintext."""
    if tls is None:
        return None
    from services.common.tls_client import ClientTLS

    cert, key = tls.certs["cli"]
    return ClientTLS(str(tls.ca), str(cert), str(key))


def _health_channel(address: str, tls: TlsFiles | None) -> grpc.Channel:
    client = cli_tls(tls)
    if client is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, client.credentials())


def wait_healthy(process: Process, timeout: float = 180.0, tls: TlsFiles | None = None) -> None:
    """Until the service has bound its port and its API's health is SERVING."""
    deadline = time.monotonic() + timeout
    try:
        process.wait_for_port(timeout)
    except ServiceDied:
        raise process.died() from None
    except TimeoutError:
        raise CliError(
            f"{process.name} did not start in {timeout:.0f}s; see {process.log_path}"
        ) from None
    with _health_channel(process.address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not process.alive():
                raise process.died()
            try:
                request = health_pb2.HealthCheckRequest(service=READY_SERVICE[process.service])
                reply = stub.Check(request, timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise CliError(f"{process.name} was not healthy in {timeout:.0f}s; see {process.log_path}")


def ensure_demo_model(
    data: Path, registry: str, token: str | None, tls: ClientTLS | None = None
) -> str:
    """Register the digits demo (exported from PyTorch) unless the registry has it."""
    import asyncio

    from services.common.errors import NotFound
    from services.registry.client import RegistryClient

    async def has_model() -> bool:
        async with RegistryClient(registry, token, tls=tls) as client:
            try:
                await client.get_model(DEMO_MODEL)
            except NotFound:
                return False
            return True

    if asyncio.run(has_model()):
        return f"the registry already has '{DEMO_MODEL}'"
    import logging

    from tools.digits import train_and_export
    from tools.models import upload_file

    logging.getLogger("torch").setLevel(logging.ERROR)  # exporter chatter, not ours

    path = data / "models" / DEMO_MODEL / "model.onnx"
    if not path.is_file():
        print(f"exporting the {DEMO_MODEL} demo model from PyTorch ...", flush=True)
        result = train_and_export(path, holdout_path=path.with_name("holdout.npz"))
        print(f"  held-out accuracy {result.accuracy:.3f}", flush=True)
    upload_file(registry, token, DEMO_MODEL, path, aliases=["production"], tls=tls)
    return f"registered '{DEMO_MODEL}' (alias production)"


def start(args: argparse.Namespace) -> tuple[list[Process], Secrets | None]:
    """Start the three services in order, each healthy before the next."""
    data = Path(args.data_dir).resolve()
    tls = TlsFiles.ensure(data / "tls") if getattr(args, "tls", False) else None
    client = cli_tls(tls)
    if args.api_keys_file and not args.auth:
        raise CliError("--api-keys-file needs --auth")
    creds = Secrets.generate(args.api_keys_file) if args.auth else None
    files = creds.write(data / "secrets") if creds else None
    env: dict[str, str] = {}
    if args.otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.otlp_endpoint
    secret = secret_env(creds)
    common = ["--log-level", args.log_level]
    processes: list[Process] = []

    def launch(service: str, name: str, port: int, extra: list[str]) -> Process:
        process_env = {**_service_env(env, service), **secret[service]}
        flags = [*extra, *tls_args(service, tls), *common]
        process = Process(service, name, port, flags, process_env, data)
        processes.append(process)
        wait_healthy(process, tls=tls)
        return process

    try:
        registry = launch("registry", "registry", args.registry_port, registry_args(data, files))
        admin = creds.admin_token if creds else None
        print(ensure_demo_model(data, registry.address, admin, client), flush=True)
        if getattr(args, "large", False):
            _ensure_large(data, registry.address, admin, client)
        backends = []
        for i in range(args.inference_replicas):
            port = args.inference_port + i if args.inference_port else 0
            name = "inference" if i == 0 else f"inference-{i + 1}"
            cache = data / "cache" / name
            backends.append(
                launch("inference", name, port, inference_args(registry.address, cache, files))
            )
        addresses = [b.address for b in backends]
        # Callers that build their own Namespace (tools/hostile) may leave it out.
        http_port = getattr(args, "gateway_http_port", None)
        launch(
            "gateway",
            "gateway",
            args.gateway_port,
            [
                *gateway_args(registry.address, addresses, files),
                *(["--http-port", str(http_port)] if http_port else []),
            ],
        )
    except BaseException:
        for process in reversed(processes):
            process.stop()
        raise
    if args.ports_file:
        ports = {p.name: p.port for p in processes}
        Path(args.ports_file).write_text(json.dumps(ports))
    return processes, creds


def _ensure_large(
    data: Path, registry: str, token: str | None, tls: ClientTLS | None = None
) -> None:
    from tools.demo.serve import Registered, ensure_large_demos

    def report(done: Registered) -> None:
        took = f" in {done.seconds:.0f} s" if done.seconds else ""
        print(f"{done.message}{took}", flush=True)

    ensure_large_demos(data, registry, token, report, tls=tls)


def _service_env(env: dict[str, str], service: str) -> dict[str, str]:
    out = dict(env)
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
        out["OTEL_SERVICE_NAME"] = f"maas-{service}"
    return out


def up(args: argparse.Namespace) -> int:
    """Start everything, print how to call it, and stop everything on Ctrl-C or SIGTERM."""
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    processes, creds = start(args)
    # The same files start() made (reused, not made again).
    tls = TlsFiles.ensure(Path(args.data_dir).resolve() / "tls") if args.tls else None
    print(banner(processes, args.data_dir, creds, large=args.large, tls=tls), flush=True)
    try:
        while not stop:
            for process in processes:
                if process.alive():
                    continue
                if process.restarts >= MAX_RESTARTS:
                    print(
                        f"maas up: {process.name} keeps exiting; see {process.log_path}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                # Like a Deployment: the others keep serving while it comes back.
                print(
                    f"maas up: {process.name} exited (code {process.process.returncode}); "
                    "restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                process.restart()
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        for process in reversed(processes):
            process.stop()
        print("stopped.", flush=True)
    return 0


def register(subparsers: Any) -> None:
    """Add `maas up`."""
    parser = subparsers.add_parser(
        "up", help="run registry, inference and gateway locally", description=__doc__
    )
    parser.add_argument("--data-dir", default=".data/maas", help="where everything is kept")
    parser.add_argument("--auth", action="store_true", help="turn auth on (generates keys)")
    parser.add_argument(
        "--api-keys-file",
        help="with --auth: the gateway's keys (YAML, hashed) instead of one generated key; "
        "the banner then shows no key",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve TLS, with mutual TLS between the services (a local CA and certs under "
        "DATA_DIR/tls, reused and renewed before expiry)",
    )
    parser.add_argument("--otlp-endpoint", help="send traces here (OTLP/gRPC)")
    parser.add_argument("--gateway-port", type=int, default=GATEWAY_PORT, help="0 picks one")
    parser.add_argument(
        "--gateway-http-port",
        type=int,
        help="the gateway's HTTP port (default 8000; with --gateway-port 0 a free one)",
    )
    parser.add_argument("--registry-port", type=int, default=REGISTRY_PORT, help="0 picks one")
    parser.add_argument(
        "--inference-port",
        type=int,
        default=INFERENCE_PORT,
        help="the first replica's; 0 picks them",
    )
    parser.add_argument(
        "--inference-replicas", type=int, default=1, help="inference processes behind the gateway"
    )
    parser.add_argument("--ports-file", help="write the bound ports here as JSON")
    parser.add_argument(
        "--no-large",
        dest="large",
        action="store_false",
        help="leave out the large demos (minilm, smollm2, efficientnet); only digits",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(func=up)
