"""The inference backends: one channel each, health probes, ejection and return.

Discovery (static, DNS or EndpointSlices) hands the pool the current set of
addresses. A new backend, or one whose ejection ran out, takes traffic only once
a grpc.health.v1 Check of the v2 service says SERVING. The balancing itself is per
request (services.gateway.balancer), over one long-lived HTTP/2 channel per backend.

Readiness is per (backend, model, version): each backend's RepositoryIndex says
which versions it has READY (read when it joins and whenever an answer or a
request says the copy is stale, at most once per `catalog_interval_seconds`), and
a health Watch per model it knows says when a model stops or starts serving. A
model that is not ready on a backend costs that backend nothing else: it stays
in rotation for the models it does serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.backends import Backend, PoolOptions
from services.gateway.balancer import PICKERS, BackendState, Health, choose
from services.gateway.metrics import GatewayMetrics

_log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


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
        self._refreshing: asyncio.Future[list[None]] | None = None
        self._refresh_started = float("-inf")
        # Calls waiting for what the backends have to change; at most one per call.
        self._waiters: set[asyncio.Future[None]] = set()

    def update(self, addresses: Iterable[str]) -> None:
        """Make the pool hold exactly these backends (new ones start by probing)."""
        wanted = set(addresses)
        for address in wanted - self.backends.keys():
            self.backends[address] = Backend.connect(address, self.options)
            _log.info("backend added", extra={"backend": address})
        for address in self.backends.keys() - wanted:
            backend = self.backends.pop(address)
            _log.info("backend removed", extra={"backend": address})
            self._stop_watching(backend)
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
        await backend.close()

    def pick(
        self, exclude: set[str], model: str = "", version: int | None = None
    ) -> Backend | None:
        """A backend for one request with the model (version) ready, chosen by the
        configured balancer."""
        states = [b.state for b in self.backends.values()]
        state = choose(states, exclude, self._pick, self.rng, model, version)
        return self.backends[state.address] if state is not None else None

    def _healthy_states(self) -> list[BackendState]:
        return [b.state for b in self.backends.values() if b.state.health is Health.HEALTHY]

    def ready_versions(self, model: str) -> frozenset[int] | None:
        """The versions of `model` READY on some healthy backend; None when a healthy
        backend does not say what it has."""
        found: set[int] = set()
        for state in self._healthy_states():
            if state.ready is None:
                return None
            found |= state.ready.get(model, frozenset())
        return frozenset(found)

    def knows(self, model: str, version: int | None = None) -> bool | None:
        """Whether a healthy backend knows `model` (that version, or any) in any state;
        None when one does not say, or when none is healthy to say (one that missed a
        deadline is being checked: its model is not unknown meanwhile)."""
        states = self._healthy_states()
        if not states or any(s.known is None for s in states):
            return None
        if version is None:
            return any(model in s.known for s in states if s.known is not None)
        return any(str(version) in s.known.get(model, ()) for s in states if s.known is not None)

    async def refresh_catalogs(self) -> None:
        """Read every healthy backend's catalog now. Callers share a read that started
        after they asked; one that started before is waited for, then a new one runs."""
        asked = self.clock()
        while True:
            reading = self._refreshing
            if reading is None or reading.done():
                self._refresh_started = self.clock()
                healthy = [b for b in self.backends.values() if b.state.health is Health.HEALTHY]
                reading = asyncio.ensure_future(
                    asyncio.gather(*(self.read_catalog(b) for b in healthy))
                )
                self._refreshing = reading
                await asyncio.shield(reading)
                return
            started = self._refresh_started
            await asyncio.shield(reading)
            if started >= asked:
                return

    def want_catalogs(self) -> None:
        """Ask every healthy backend for its RepositoryIndex again (rate-limited)."""
        for state in self._healthy_states():
            state.catalog_wanted = True
        self._wake.set()

    def states(self) -> list[BackendState]:
        """Every backend's state."""
        return [b.state for b in self.backends.values()]

    def healthy(self) -> int:
        """How many backends take traffic."""
        return sum(b.state.health is Health.HEALTHY for b in self.backends.values())

    def connected(self, backend: Backend) -> bool:
        """Whether the backend's connection is up (an error then came from the backend)."""
        return backend.channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY

    def failed(self, backend: Backend, model: str = "", version: int | None = None) -> bool:
        """Record an UNAVAILABLE from a backend; True when its connection itself failed.

        A backend whose connection is down is ejected at once. One that is
        connected but said UNAVAILABLE about a model (a version loading or failed)
        has that model (version) marked not ready and stays in rotation for the
        rest; one that said it about no model (draining) is checked again.
        """
        if not self.connected(backend):
            self._eject(backend)
            backend.state.reconnecting = True
            return True
        if model:
            self.unready(backend, model, version)
        elif backend.state.health is Health.HEALTHY:
            backend.state.health = Health.PROBING
            self._wake.set()
            self._changed()
        return False

    def suspect(self, backend: Backend) -> None:
        """A call ran out of time on the backend: it takes no new calls until a health
        Check (within the probe timeout) says it answers; a hung one is then ejected."""
        if backend.address in self.backends and backend.state.health is Health.HEALTHY:
            backend.state.health = Health.PROBING
            _log.info("backend missed a deadline; checking it", extra={"backend": backend.address})
            self._wake.set()
            self._changed()

    def unready(self, backend: Backend, model: str, version: int | None) -> None:
        """A backend's answer says a model (version) is not ready there: route around it
        and re-read its catalog."""
        backend.state.unready(model, version)
        backend.state.catalog_wanted = True
        self._wake.set()

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

    async def _check(self, backend: Backend) -> bool:
        """Whether the backend's v2 service (or, if it names none, the server) is SERVING."""
        stub = health_pb2_grpc.HealthStub(backend.channel)
        wait = backend.state.health is Health.PROBING and backend.state.failures == 0
        for service in (SERVICE_NAME, ""):
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=self.options.probe_timeout_seconds,
                    wait_for_ready=wait,
                    metadata=backend.metadata(),
                )
                return bool(reply.status == SERVING)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    return False
        return False

    async def probe(self, backend: Backend) -> bool:
        """One health Check, then its catalog; the backend takes traffic again when it passes."""
        serving = await self._check(backend)
        if serving:
            await self.read_catalog(backend)
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

    async def read_catalog(self, backend: Backend) -> None:
        """Read which models and versions the backend has (RepositoryIndex), and watch
        each model's health. A backend without RepositoryIndex is asked about anything."""
        stub = pb_grpc.GRPCInferenceServiceStub(backend.channel)
        state = backend.state
        state.catalog_at, state.catalog_wanted = self.clock(), False
        try:
            reply = await stub.RepositoryIndex(
                pb.RepositoryIndexRequest(),
                timeout=self.options.probe_timeout_seconds,
                metadata=backend.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                state.ready = state.known = None
            elif exc.code() is grpc.StatusCode.UNAVAILABLE and not self.connected(backend):
                # Gone without a call to fail (a backend stopped while idle): ejected as
                # a failed call's would be, so readiness does not count it meanwhile.
                self._eject(backend)
                state.reconnecting = True
            else:
                state.catalog_wanted = True  # try again at the next interval
            return
        state.catalog([(m.name, m.version, m.state) for m in reply.models], self.clock())
        if backend.address in self.backends:
            self._watch_models(backend)
        self._changed()

    def _watch_models(self, backend: Backend) -> None:
        for name in backend.state.known or ():
            if name not in backend.watches:
                task = asyncio.ensure_future(self._watch(backend, name))
                backend.watches[name] = task

    async def _watch(self, backend: Backend, name: str) -> None:
        """Follow one model's health on one backend until the stream ends."""
        stub = health_pb2_grpc.HealthStub(backend.channel)
        heard = False
        try:
            watch = stub.Watch(
                health_pb2.HealthCheckRequest(service=name), metadata=backend.metadata()
            )
            async for reply in watch:
                heard = True
                if reply.status == SERVING:
                    if not backend.state.serves(name, None):
                        backend.state.catalog_wanted = True
                        self._wake.set()
                elif backend.state.serves(name, None):
                    _log.info(
                        "model not serving", extra={"backend": backend.address, "model": name}
                    )
                    backend.state.unready(name, None)
                    self._wake.set()
        except grpc.aio.AioRpcError:
            # The connection went (or the backend cannot Watch): a catalog read watches
            # again; it is asked for only if this watch worked, so a backend that cannot
            # Watch is not polled for its catalog.
            if heard:
                backend.state.catalog_wanted = True
                self._wake.set()
        finally:
            if backend.watches.get(name) is asyncio.current_task():
                del backend.watches[name]

    def _stop_watching(self, backend: Backend) -> None:
        for task in backend.watches.values():
            task.cancel()
        backend.watches.clear()

    async def probe_due(self) -> None:
        """Check every backend that is new or whose ejection has run out, and re-read
        the catalogs that are wanted and due."""
        now = self.clock()
        due = [b for b in self.backends.values() if b.state.probe_due(now) or self._reconnected(b)]
        stale = [
            b
            for b in self.backends.values()
            if b.state.health is Health.HEALTHY
            and b.state.catalog_wanted
            and now - b.state.catalog_at >= self.options.catalog_interval_seconds
        ]
        if due or stale:
            await asyncio.gather(
                *(self.probe(b) for b in due), *(self.read_catalog(b) for b in stale)
            )

    def _reconnected(self, backend: Backend) -> bool:
        """Whether an ejected backend whose connection failed can be reached again; asks
        the channel to reconnect (on gRPC's own backoff) while it cannot."""
        state = backend.state
        if state.health is not Health.EJECTED or not state.reconnecting:
            return False
        channel_state = backend.channel.get_state(try_to_connect=True)
        if channel_state is not grpc.ChannelConnectivity.READY:
            return False
        state.reconnecting = False
        return True

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait up to `timeout` for a backend's health or catalog to change; probes run
        now rather than at the next interval. False if nothing changed."""
        if timeout <= 0:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        for backend in self.backends.values():
            if backend.state.health is Health.HEALTHY:
                backend.state.catalog_wanted = True
        self._wake.set()
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)

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
        if self._refreshing is not None:
            self._refreshing.cancel()
        for backend in self.backends.values():
            self._stop_watching(backend)
            await backend.close()
        self.backends.clear()

    def _changed(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_change is not None:
            self.on_change()
