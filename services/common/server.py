"""Server lifecycle on grpc.aio: health, reflection, interceptors, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from services.common.files import write_atomically
from services.common.interceptor import ErrorInterceptor, MetricsInterceptor
from services.common.metrics import MetricsServer, RpcMetrics
from services.common.settings import ServiceSettings
from services.common.telemetry import Telemetry

_log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to register: its full service name and how to add it."""

    name: str
    add: Callable[[grpc.aio.Server], None]


@dataclass
class GrpcServer:
    """One grpc.aio server with health, reflection and the error interceptor.

    `start()` binds and returns the port without blocking; `wait()` blocks until
    stopped; `shutdown()` marks health NOT_SERVING, lets in-flight calls finish
    within the grace period and refuses new ones.
    """

    settings: ServiceSettings
    bindings: Sequence[ServiceBinding]
    # Run inside the error mapping, so the errors they raise become statuses.
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    telemetry: Telemetry = field(default_factory=Telemetry)
    # With a registry (and a service name for the metric names), /metrics is served.
    metrics_registry: CollectorRegistry | None = None
    service: str = "service"
    # Called when a shutdown starts, before the server stops taking calls.
    on_drain: list[Callable[[], None]] = field(default_factory=list)
    # Awaited once the server has stopped.
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    health: health.aio.HealthServicer = field(init=False)
    port: int = field(init=False, default=0)
    metrics_port: int = field(init=False, default=0)
    _server: grpc.aio.Server | None = field(init=False, default=None)
    _metrics: MetricsServer | None = field(init=False, default=None)
    _stopping: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.health = health.aio.HealthServicer()

    async def start(self) -> int:
        """Bind, start serving and return the bound port."""
        limit = self.settings.max_message_bytes
        interceptors: list[grpc.aio.ServerInterceptor] = [*self.telemetry.server_interceptors()]
        if self.metrics_registry is not None:
            interceptors.append(MetricsInterceptor(RpcMetrics(self.metrics_registry, self.service)))
        interceptors += [ErrorInterceptor(), *self.interceptors]
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        for binding in self.bindings:
            binding.add(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [b.name for b in self.bindings]
        names += [health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        self.port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self._server = server
        if self.metrics_registry is not None:
            self._metrics = MetricsServer(
                self.metrics_registry, self.settings.host, self.settings.metrics_port
            )
            self.metrics_port = self._metrics.start()
        await self.health.set("", SERVING)
        for binding in self.bindings:
            await self.health.set(binding.name, SERVING)
        if self.settings.port_file:
            write_atomically(Path(self.settings.port_file), f"{self.port}\n")
        return self.port

    async def wait(self) -> None:
        """Block until the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping

    def request_shutdown(self) -> None:
        """Start a graceful shutdown once; safe to call from a signal handler."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.shutdown())

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish within the grace period."""
        if self._server is None:
            return
        grace = self.settings.grace_seconds if grace is None else grace
        _log.info("shutting down: draining for up to %.1fs", grace)
        for drain in self.on_drain:
            drain()
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        for hook in self.on_shutdown:
            await hook()
        if self._metrics is not None:
            self._metrics.stop()
        self.telemetry.shutdown()
        _log.info("stopped")

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful shutdown."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)
