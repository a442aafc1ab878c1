"""`maas-gateway`: the public entry point, wired from GatewaySettings."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common.files import write_atomically
from services.common.logs import configure_logging
from services.common.server import NOT_SERVING, SERVING, GrpcServer, run_service
from services.common.settings import add_server_flags, add_workers_flag
from services.common.telemetry import Telemetry
from services.common.tls_client import add_client_flags
from services.common.workers import SharedPort, Supervisor, run_supervisor
from services.common.workers_role import WorkerRole
from services.gateway.access import make_keys, make_limiter
from services.gateway.app import GatewayApp
from services.gateway.auth import StreamSlots
from services.gateway.backends import PoolOptions
from services.gateway.balancer import PICKERS
from services.gateway.canary import CanaryPolicy, load_canary
from services.gateway.discovery import Discovery, DnsDiscovery, StaticDiscovery
from services.gateway.endpointslices import EndpointSliceDiscovery
from services.gateway.follower import RegistryFollower
from services.gateway.forward import Forwarder
from services.gateway.http.app import build_app
from services.gateway.http.deps import HttpDeps
from services.gateway.http.server import HttpOptions, HttpServer
from services.gateway.metrics import GatewayMetrics
from services.gateway.pool import BackendPool
from services.gateway.routes import RouteTable
from services.gateway.routing import Router
from services.gateway.servicer import SERVICE_NAME, GatewayServicer
from services.gateway.settings import GatewaySettings
from services.gateway.worker_limits import WorkerStreamSlots, WorkerTable
from services.gateway.worker_limits import create as create_table
from services.registry.client import RegistryClient

_log = logging.getLogger(__name__)


class GatewayServer:
    """Discovery, the registry follower, the backend pool, and the gRPC and HTTP servers."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        rng: random.Random | None = None,
        limits: WorkerTable | None = None,
    ) -> None:
        """`limits`: the table a supervisor's workers share their rate limits and
        stream slots in (services.gateway.worker_limits); None for a single process."""
        if not (settings.backends or settings.backend_dns or settings.backend_endpointslice):
            raise ValueError(
                "no backends: set --backends, --backend-dns or --backend-endpointslice"
            )
        self.settings = settings
        rng = rng or random.Random()
        self.telemetry = Telemetry.from_env("maas-gateway")
        self.metrics_registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.metrics_registry)
        self.pool = BackendPool(
            PoolOptions(
                max_message_bytes=settings.max_message_bytes,
                balancer=settings.balancer,
                eject_base_seconds=settings.eject_base_seconds,
                eject_max_seconds=settings.eject_max_seconds,
                probe_timeout_seconds=settings.probe_timeout_seconds,
                ready_wait_seconds=settings.ready_wait_seconds,
                interceptors=tuple(self.telemetry.client_interceptors()),
                backend_token=settings.secret("backend_token"),
                tls=settings.client_tls(),
                mux_connections=settings.backend_connections if settings.backend_mux else 0,
            ),
            rng,
            on_change=self._state_changed,
            metrics=self.metrics,
        )
        self.metrics.track_backends(self.metrics_registry, self.pool.states)
        self.routes = RouteTable() if settings.registry else None
        self.follower: RegistryFollower | None = None
        if settings.registry and self.routes is not None:
            client = RegistryClient(
                settings.registry,
                settings.secret("registry_token"),
                interceptors=self.telemetry.client_interceptors(),
                tls=settings.client_tls(),
            )
            self.follower = RegistryFollower(client, self.routes, self._state_changed)
        self.limiter = None if settings.no_auth else make_limiter(settings, self.metrics)
        self.app = GatewayApp(
            self.routes,
            CanaryPolicy(load_canary(settings.canary_file), rng),
            make_keys(settings, self.limiter, limits),
            backends_ready=lambda: self.pool.healthy() > 0,
        )
        tracing = self.telemetry.tracing("maas.gateway")
        self.router = Router(
            self.app,
            Forwarder(self.pool, settings.max_attempts, self.metrics, tracing=tracing),
            self.metrics,
            follower=self.follower,
            tracing=tracing,
            streams=(
                WorkerStreamSlots(limits, settings.max_streams_per_key)
                if limits is not None
                else StreamSlots(settings.max_streams_per_key)
            ),
        )
        self.servicer = GatewayServicer(
            self.app,
            self.router,
            default_timeout=settings.default_timeout_seconds,
            stream_window=settings.stream_window,
            trace_passed_on=not tracing.enabled,
        )
        self.http = HttpServer(
            build_app(
                HttpDeps(
                    self.app,
                    self.router,
                    default_timeout=settings.default_timeout_seconds,
                    max_body_bytes=settings.max_message_bytes,
                    passed_keys=self.servicer.passed_keys,
                    metrics=self.metrics,
                    openai_prefix=settings.http_openai_prefix,
                )
            ),
            HttpOptions(
                settings.host,
                settings.http_port,
                max_connections=settings.http_max_connections,
                keep_alive=settings.http_keep_alive_seconds,
                header_timeout=settings.http_header_timeout_seconds,
                max_header_bytes=2 * settings.max_metadata_bytes,
            ),
            settings,
        )
        self.http_port = 0
        self._http_stopping: asyncio.Future[None] | None = None
        self._grace: float | None = None
        self.discovery = self._discovery()
        self.grpc = GrpcServer(
            settings,
            [self.servicer.binding(), self.servicer.explain_binding()],
            on_drain=[self._drain],
            on_shutdown=[self._close],
            telemetry=self.telemetry,
            metrics_registry=self.metrics_registry,
            service="gateway",
        )
        self._ready: bool | None = None
        # /readyz on the metrics port: the v2 service's health as last published.
        self.grpc.api_ready = lambda: bool(self._ready)
        self._ready_changed = asyncio.Event()
        self._health_tasks: set[asyncio.Task[None]] = set()

    def _discovery(self) -> Discovery:
        s = self.settings
        if s.backend_endpointslice:
            return EndpointSliceDiscovery(
                s.backend_endpointslice, self.pool.update, namespace=s.namespace
            )
        if s.backend_dns:
            return DnsDiscovery(s.backend_dns, self.pool.update, interval=s.dns_refresh_seconds)
        return StaticDiscovery(s.backend_list(), self.pool.update)

    def _drain(self) -> None:
        """Readiness goes false first; HTTP then drains beside gRPC, within the same grace."""
        self.app.draining = True
        if self._http_stopping is None:
            grace = self.settings.grace_seconds if self._grace is None else self._grace
            self._http_stopping = asyncio.ensure_future(self.http.stop(grace))

    def _state_changed(self) -> None:
        """The v2 service's health follows readiness; "" stays SERVING until a drain, so
        a liveness probe does not restart a gateway that only waits for backends."""
        if self.grpc.port == 0:
            return
        ready = self.app.ready()
        if ready == self._ready:
            return
        self._ready = ready
        self._ready_changed.set()
        status = SERVING if ready else NOT_SERVING
        _log.info("gateway readiness", extra={"ready": ready})

        async def publish() -> None:
            await self.grpc.health.set(SERVICE_NAME, status)

        task = asyncio.ensure_future(publish())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def start(self, ready_timeout: float = 10.0) -> int:
        """Serve, start discovery and following, and wait (bounded) until ready."""
        port = await self.grpc.start()
        try:
            self.http_port = await self.http.start()
        except BaseException:
            await self.grpc.shutdown(0)
            raise
        if self.settings.http_port_file:
            write_atomically(Path(self.settings.http_port_file), f"{self.http_port}\n")
        self._state_changed()
        await self.discovery.start()
        # Every backend found at start is checked once before start() returns.
        await self.pool.probe_due()
        self.pool.start()
        if self.follower is not None:
            self.follower.start()
        await self.wait_ready(ready_timeout)
        _log.info(
            "maas-gateway listening",
            extra={
                "port": port,
                "http_port": self.http_port,
                "ready": self.app.ready(),
                "backends": len(self.pool.backends),
            },
        )
        return port

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until ready, at most `timeout` seconds; whether it is."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.app.ready() and loop.time() < end:
            self._ready_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_changed.wait(), end - loop.time())
        return self.app.ready()

    async def wait(self) -> None:
        """Block until stopped."""
        await self.grpc.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and stop."""
        self._grace = grace
        await self.grpc.shutdown(grace)

    async def _close(self) -> None:
        if self._http_stopping is not None:
            await self._http_stopping
        await self.discovery.close()
        if self.follower is not None:
            await self.follower.close()
        await self.pool.close()
        if self.limiter is not None:
            await self.limiter.close()


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror GatewaySettings; secrets only from the environment or files."""
    p = argparse.ArgumentParser(
        prog="maas-gateway",
        description="The maas gateway. Every flag can also be set as MAAS_GATEWAY_<FLAG>; "
        "secrets only as MAAS_GATEWAY_REGISTRY_TOKEN / MAAS_GATEWAY_API_KEYS / "
        "MAAS_GATEWAY_BACKEND_TOKEN or in "
        "--api-keys-file, never on the command line.",
    )
    add_server_flags(p, port=8001, metrics_port=9001)
    add_workers_flag(p)
    p.add_argument("--http-port", type=int, help="HTTP port (default 8000; 0 picks one)")
    p.add_argument("--http-port-file", help="write the bound HTTP port here once serving")
    p.add_argument("--registry", help="registry host:port to resolve versions through")
    p.add_argument("--backends", help="comma-separated inference backends host:port")
    p.add_argument("--backend-dns", help="headless Service name:port, re-resolved")
    p.add_argument("--backend-endpointslice", help="Service name[:port] whose slices to watch")
    p.add_argument("--namespace", help="Kubernetes namespace of that Service")
    p.add_argument("--dns-refresh-seconds", type=float, help="DNS re-resolve period")
    p.add_argument("--api-keys-file", help="YAML file of hashed API keys")
    p.add_argument("--no-auth", action="store_true", default=None, help="serve without keys")
    p.add_argument("--balancer", choices=list(PICKERS), help="per-request choice")
    p.add_argument("--default-timeout-seconds", type=float, help="deadline for calls without")
    p.add_argument("--max-attempts", type=int, help="backends tried per request")
    p.add_argument("--eject-base-seconds", type=float, help="first ejection of a backend")
    p.add_argument("--eject-max-seconds", type=float, help="longest ejection of a backend")
    p.add_argument("--ready-wait-seconds", type=float, help="wait for a ready backend")
    p.add_argument("--canary-file", help="YAML traffic splits per model")
    p.add_argument(
        "--backend-mux",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="multiplex ModelInfer calls on streams to backends (--no-backend-mux: unary)",
    )
    p.add_argument("--backend-connections", type=int, help="connections per backend (mux)")
    p.add_argument(
        "--rate-limit-redis-url",
        help="redis:// or rediss:// URL sharing rate limits across replicas (with a password: "
        "set MAAS_GATEWAY_RATE_LIMIT_REDIS_URL instead)",
    )
    p.add_argument(
        "--rate-limit-redis-policy",
        choices=["fail-open", "fail-closed"],
        help="when Redis fails (default fail-open)",
    )
    p.add_argument("--rate-limit-redis-timeout-seconds", type=float, help="longest wait for Redis")
    add_client_flags(p, "the registry and backends")
    return p


async def serve(settings: GatewaySettings) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    role = WorkerRole.from_env()
    limits = None
    if role is not None and role.shared_fd is not None:
        limits = WorkerTable(role.shared_fd, role.index)
    server = GatewayServer(settings, limits=limits)
    if role is not None:  # one of a supervisor's --workers
        server.grpc.share_port = server.grpc.private_metrics = True
        server.http.options = dataclasses.replace(server.http.options, reuse_port=True)
    server.grpc.install_signal_handlers()
    await server.start()
    if role is not None:
        role.report(metrics_port=server.grpc.metrics_port)
    await server.wait()


def supervise(settings: GatewaySettings, argv: Sequence[str]) -> Supervisor:
    """--workers N: N gateways sharing the gRPC and HTTP ports."""
    ports = [
        SharedPort("port", settings.port, settings.port_file),
        SharedPort("http_port", settings.http_port, settings.http_port_file),
    ]
    return gateway_supervisor(settings, argv, ports)


def gateway_supervisor(
    settings: GatewaySettings, argv: Sequence[str], ports: Sequence[SharedPort]
) -> Supervisor:
    """The supervisor of --workers N gateways, with the table their rate limits and
    stream slots share (services.gateway.worker_limits) sized for the keys configured."""
    keys = 0 if settings.no_auth else len(make_keys(settings) or ())
    return Supervisor(
        "gateway",
        settings,
        argv,
        ports,
        shared=(lambda: create_table(keys, settings.workers)) if keys else None,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `maas-gateway` console script."""
    args = vars(build_parser().parse_args(argv))
    try:
        settings = GatewaySettings.from_args(args)
    except ValueError as exc:
        sys.exit(f"maas-gateway: invalid settings: {exc}")
    configure_logging(settings.log_level, "gateway")
    if settings.workers > 1:
        try:
            supervisor = supervise(settings, sys.argv[1:] if argv is None else argv)
        except (ValueError, OSError) as exc:
            sys.exit(f"maas-gateway: {exc}")
        sys.exit(run_supervisor("maas-gateway", supervisor))
    try:
        code = run_service("maas-gateway", serve(settings), settings.event_loop)
    except (ValueError, OSError) as exc:
        sys.exit(f"maas-gateway: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()
