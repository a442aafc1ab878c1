"""Server lifecycle on grpc.aio: health, reflection, interceptors, graceful stop."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from services.common.files import write_atomically
from services.common.inflight import InFlight, stop_when_idle
from services.common.interceptor import ErrorInterceptor, MetricsInterceptor
from services.common.lifeline import watch_lifeline
from services.common.metrics import MetricsServer, RpcMetrics
from services.common.reflection import enable_reflection
from services.common.settings import EventLoop, ServiceSettings
from services.common.telemetry import Telemetry
from services.common.tls import ServerTls, TlsError

_log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PortInUse(OSError):
    """A port the settings ask for is taken; names the flag and variable that change it."""

    def __init__(self, port: int, setting: str, settings: ServiceSettings) -> None:
        prefix = type(settings).model_config.get("env_prefix", "")
        self.port = port
        self.flag = "--" + setting.replace("_", "-")
        self.env = f"{prefix}{setting.upper()}"
        super().__init__(errno.EADDRINUSE, f"port {port} is in use")

    def __str__(self) -> str:
        return f"port {self.port} is in use (change it with {self.flag} or {self.env})"


def start_metrics(metrics: MetricsServer, settings: ServiceSettings) -> int:
    """Start `metrics` and return its port; PortInUse (naming metrics_port) if taken."""
    try:
        return metrics.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(settings.metrics_port, "metrics_port", settings) from None
        raise


def _port_taken(host: str, port: int) -> bool:
    """Whether `port` is taken on every address `host` resolves to, so no bind can work.

    Checked before grpc binds, because grpc reports only "Failed to bind" (and logs
    a line of its own), not why.
    """
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False
    taken = [_in_use(family, kind, proto, address) for family, kind, proto, _, address in infos]
    return bool(taken) and all(taken)


def _in_use(family: int, kind: int, proto: int, address: tuple[Any, ...]) -> bool:
    try:
        with socket.socket(family, kind, proto) as sock:
            # As grpc binds: address reuse on, and `[::]` dual-stack.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False


def run_service(
    prog: str, main: Coroutine[None, None, None], event_loop: EventLoop = "uvloop"
) -> int:
    """Run a service's main coroutine on `event_loop` (uvloop or asyncio); a port in
    use or unusable TLS files are one line on stderr and status 2.

    A parent's lifeline, if one was passed, is watched from here on.
    """
    watch_lifeline()
    _log.info("running on the %s event loop", event_loop)
    try:
        if event_loop == "uvloop":
            uvloop.run(main)
        else:
            asyncio.run(main)
    except (PortInUse, TlsError) as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 2
    return 0


def grpc_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Every grpc core limit a server runs with (docs/transport-limits.md says why)."""

    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    limit, streams = settings.max_message_bytes, settings.max_concurrent_streams
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        # Headers: up to the soft limit always accepted, so an oversized token reaches
        # the auth check (UNAUTHENTICATED); beyond the hard one, RESOURCE_EXHAUSTED.
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", 2 * settings.max_metadata_bytes),
        # Rapid reset: without a cap every reset stream joins the server-wide queue of
        # calls not yet picked up, and past 1000 of those grpc core cancels calls from
        # any connection. With it (and overload protection, which counts a stream until
        # the server lets go of it), the flood's streams are refused on its connection,
        # and the queue has room for two connections' worth before it cancels any.
        ("grpc.max_concurrent_streams", streams),
        # Unread streams: BDP probing grows every stream's receive window to several MB
        # on a fast link, all of it buffered for a stream the server does not read.
        # Off, a stream's window is this lookahead; a message the server is reading
        # still gets a window as large as the message, so large requests keep their speed.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.stream_window_bytes),
        ("grpc.http.overload_protection", 1),
        ("grpc.server.max_pending_requests", 2 * streams),
        ("grpc.server.max_pending_requests_hard_limit", 4 * streams),
        # Slowloris: idle, never-handshaken and dead connections are closed.
        ("grpc.max_connection_idle_ms", ms(settings.max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", ms(settings.max_connection_age_seconds)),
        ("grpc.server_handshake_timeout_ms", ms(settings.handshake_timeout_seconds)),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_seconds)),
    ]


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
    # A stop asked for before start() finished (SIGTERM while starting up, as a
    # `docker stop` soon after `docker run` sends): honoured by wait().
    _stop_asked: bool = field(init=False, default=False)
    _inflight: InFlight = field(init=False)
    # The certificate files when --tls-cert is set (read at start, followed after).
    tls: ServerTls | None = field(init=False, default=None)
    # What /healthz on the metrics port says: SERVING from start until the drain begins.
    _serving: bool = field(init=False, default=False)
    # A --workers worker (services/common/workers.py): the port is bound with
    # SO_REUSEPORT beside its siblings (the supervisor holds it, so it is not checked
    # here), and /metrics is plaintext on a loopback port for the supervisor to merge.
    share_port: bool = False
    private_metrics: bool = False
    # What /readyz on the metrics port adds to /healthz: whether the API service can
    # serve (read from the metrics thread, so a plain attribute read). None: as /healthz.
    api_ready: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        self.health = health.aio.HealthServicer()
        self._inflight = InFlight()

    async def start(self) -> int:
        """Bind, start serving and return the bound port."""
        interceptors: list[grpc.aio.ServerInterceptor] = [*self.telemetry.server_interceptors()]
        if self.metrics_registry is not None:
            interceptors.append(MetricsInterceptor(RpcMetrics(self.metrics_registry, self.service)))
        # Innermost, so that it sees the servicers' own behaviors (a Watch is a coroutine).
        interceptors += [ErrorInterceptor(), *self.interceptors, self._inflight]
        options = grpc_options(self.settings)
        if self.share_port:
            options = [(k, 1 if k == "grpc.so_reuseport" else v) for k, v in options]
        server = grpc.aio.server(interceptors=interceptors, options=options)
        for binding in self.bindings:
            binding.add(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection([*(b.name for b in self.bindings), health.SERVICE_NAME], server)
        # TlsError before anything binds.
        if self.settings.tls_cert or self.settings.tls_key or self.settings.tls_client_ca:
            self.tls = ServerTls(self.settings)
        else:
            _log.info("no --tls-cert: serving plaintext")
        # Metrics first: a grpc server that bound a port holds it until it is collected,
        # even when never started, and a metrics server stops at once.
        if self.metrics_registry is not None:
            self._metrics = self._start_metrics(self.metrics_registry)
        try:
            self.port = self._bind(server)
            await server.start()
        except BaseException:
            if self._metrics is not None:
                self._metrics.stop()
                self._metrics = None
            raise
        self._server = server
        await self.health.set("", SERVING)
        self._serving = True
        for binding in self.bindings:
            await self.health.set(binding.name, SERVING)
        if self.settings.port_file:
            write_atomically(Path(self.settings.port_file), f"{self.port}\n")
        return self.port

    def _bind(self, server: grpc.aio.Server) -> int:
        """Add the gRPC port, TLS when a certificate is set; PortInUse when it is taken."""
        host, port = self.settings.host, self.settings.port
        if port and not self.share_port and _port_taken(host, port):
            raise PortInUse(port, "port", self.settings)
        try:
            if self.tls is not None:
                bound = server.add_secure_port(f"{host}:{port}", self.tls.grpc_credentials())
            else:
                bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpc >= 1.60 raises; older versions return 0
            bound = 0
        if bound == 0:
            if port and not self.share_port and _port_taken(host, port):  # taken since
                raise PortInUse(port, "port", self.settings)
            raise OSError(f"could not bind {host}:{port}")
        return bound

    def _start_metrics(self, registry: CollectorRegistry) -> MetricsServer:
        """Serve /metrics; PortInUse when its port is taken."""
        # With TLS on the gRPC port, /metrics and /healthz are HTTPS from the same files
        # (server certificate only: probes and scrapers carry no client certificate).
        tls = self.settings if self.tls is not None and not self.private_metrics else None
        metrics = MetricsServer(
            registry,
            "127.0.0.1" if self.private_metrics else self.settings.host,
            self.settings.metrics_port,
            tls_cert=tls.tls_cert if tls else None,
            tls_key=tls.tls_key if tls else None,
            ready=lambda: self._serving,
            api_ready=lambda: self._serving and (self.api_ready is None or self.api_ready()),
        )
        self.metrics_port = start_metrics(metrics, self.settings)
        return metrics

    async def wait(self) -> None:
        """Block until the server has stopped (at once drained, when a stop was asked
        for while it was starting)."""
        if self._stop_asked:
            self.request_shutdown()
        if self._server is not None:
            await self._server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping

    def request_shutdown(self) -> None:
        """Start a graceful shutdown once; safe to call from a signal handler. Before
        the server has started there is nothing to drain yet: the stop is kept for
        wait(), which the caller reaches once the whole service has started."""
        if self._server is None:
            self._stop_asked = True
        elif self._stopping is None:
            self._stopping = asyncio.ensure_future(self.shutdown())

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish within the grace period."""
        if self._server is None:
            return
        grace = self.settings.grace_seconds if grace is None else grace
        _log.info("shutting down: draining for up to %.1fs", grace)
        for drain in self.on_drain:
            drain()
        self._serving = False
        await self.health.enter_graceful_shutdown()
        await stop_when_idle(self._server, grace, self._inflight)
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
