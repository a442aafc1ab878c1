"""The inference backends: one channel each, health probes, ejection and return.

Discovery (static, DNS or EndpointSlices) hands the pool the current set of
addresses. A new backend, or one whose ejection ran out, takes traffic only once
a grpc.health.v1 Check says SERVING. The balancing itself is per request
(services.gateway.balancer), over one long-lived HTTP/2 channel per backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.balancer import DEFAULT_PICKER, PICKERS, BackendState, Health, choose
from services.gateway.metrics import GatewayMetrics

_log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class PoolOptions:
    """How backends are called, ejected and probed."""

    max_message_bytes: int
    balancer: str = DEFAULT_PICKER
    eject_base_seconds: float = 1.0
    eject_max_seconds: float = 30.0
    probe_timeout_seconds: float = 1.0
    probe_interval_seconds: float = 0.2
    # Client interceptors for backend channels (trace context), if any.
    interceptors: tuple[grpc.aio.ClientInterceptor, ...] = ()


@dataclass
class Backend:
    """A backend's channel and state; its callables are made once per method."""

    state: BackendState
    channel: grpc.aio.Channel
    _methods: dict[str, grpc.aio.UnaryUnaryMultiCallable] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.state.address

    def method(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
        """A unary callable for `path` that sends and returns bytes as they are."""
        call = self._methods.get(path)
        if call is None:
            # No serializers: the request bytes go out as they came in.
            call = self._methods[path] = self.channel.unary_unary(path)
        return call


class BackendPool:
    """Every known backend, keyed by address."""

    def __init__(
        self,
        options: PoolOptions,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        self.on_change = on_change
        self.backends: dict[str, Backend] = {}
        self._pick = PICKERS[options.balancer]
        self._wake = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _channel(self, address: str) -> grpc.aio.Channel:
        limit = self.options.max_message_bytes
        return grpc.aio.insecure_channel(
            address,
            interceptors=list(self.options.interceptors) or None,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Reconnect quickly after a backend restarts.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )

    def update(self, addresses: Iterable[str]) -> None:
        """Make the pool hold exactly these backends (new ones start by probing)."""
        wanted = set(addresses)
        for address in wanted - self.backends.keys():
            self.backends[address] = Backend(BackendState(address), self._channel(address))
            _log.info("backend added", extra={"backend": address})
        for address in self.backends.keys() - wanted:
            backend = self.backends.pop(address)
            _log.info("backend removed", extra={"backend": address})
            task = asyncio.ensure_future(self._close_when_idle(backend))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._wake.set()
        self._changed()

    async def _close_when_idle(self, backend: Backend, limit: float = 30.0) -> None:
        # In-flight calls on a removed backend finish before its channel closes.
        deadline = self.clock() + limit
        while backend.state.inflight and self.clock() < deadline:
            await asyncio.sleep(0.1)
        await backend.channel.close()

    def pick(self, exclude: set[str]) -> Backend | None:
        """A backend for one request, chosen by the configured balancer."""
        states = [b.state for b in self.backends.values()]
        state = choose(states, exclude, self._pick, self.rng)
        return self.backends[state.address] if state is not None else None

    def states(self) -> list[BackendState]:
        """Every backend's state."""
        return [b.state for b in self.backends.values()]

    def healthy(self) -> int:
        """How many backends take traffic."""
        return sum(b.state.health is Health.HEALTHY for b in self.backends.values())

    def failed(self, backend: Backend) -> bool:
        """Record an UNAVAILABLE from a backend; True when its connection itself failed.

        A backend whose connection is down is ejected at once. One that is
        connected but said UNAVAILABLE (a model loading, the server draining) is
        checked again: its health decides whether it stays in rotation.
        """
        state = backend.channel.get_state(try_to_connect=False)
        if state is grpc.ChannelConnectivity.READY:
            if backend.state.health is Health.HEALTHY:
                backend.state.health = Health.PROBING
                self._wake.set()
                self._changed()
            return False
        self._eject(backend)
        return True

    def _eject(self, backend: Backend) -> None:
        if backend.address not in self.backends or backend.state.health is Health.EJECTED:
            return
        o = self.options
        backoff = backend.state.eject(self.clock(), o.eject_base_seconds, o.eject_max_seconds)
        if self.metrics is not None:
            self.metrics.ejections.inc()
        _log.warning(
            "backend ejected", extra={"backend": backend.address, "seconds": round(backoff, 3)}
        )
        self._wake.set()
        self._changed()

    async def probe(self, backend: Backend) -> bool:
        """One health Check; the backend takes traffic again when it passes."""
        stub = health_pb2_grpc.HealthStub(backend.channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self.options.probe_timeout_seconds,
                wait_for_ready=backend.state.health is Health.PROBING
                and backend.state.failures == 0,
            )
            serving = reply.status == SERVING
        except grpc.aio.AioRpcError:
            serving = False
        if backend.address in self.backends:
            before = backend.state.health
            o = self.options
            backend.state.probed(serving, self.clock(), o.eject_base_seconds, o.eject_max_seconds)
            if backend.state.health is not before:
                _log.info(
                    "backend health",
                    extra={"backend": backend.address, "health": backend.state.health.value},
                )
                self._changed()
        return serving

    async def probe_due(self) -> None:
        """Check every backend that is new or whose ejection has run out."""
        now = self.clock()
        due = [b for b in self.backends.values() if b.state.probe_due(now)]
        if due:
            await asyncio.gather(*(self.probe(b) for b in due))

    async def _probe_loop(self) -> None:
        while True:
            self._wake.clear()
            await self.probe_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.probe_interval_seconds)

    def start(self) -> None:
        """Start probing in the background."""
        if self._prober is None:
            self._prober = asyncio.ensure_future(self._probe_loop())

    async def close(self) -> None:
        """Stop probing and close every channel."""
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for task in list(self._closing):
            task.cancel()
        for backend in self.backends.values():
            await backend.channel.close()
        self.backends.clear()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
