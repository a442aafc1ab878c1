"""The gateway's request path in plain Python: admit, look up, route, forward, count.

A front end (the gRPC servicer today, HTTP routes later) reads a request's few
routing fields, calls this, and converts what comes back; every routing decision
is made here, so both front ends take the same path. Nothing here imports grpc:
backends are reached through the `Backends` protocol (services.gateway.backend_api).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from opentelemetry import trace

from services.common.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.route_version import VERSION_HEADER_FROM, route_version_entry
from services.common.telemetry import AttributeValue, Tracing
from services.common.versions import is_number
from services.gateway import wire
from services.gateway.app import GatewayApp, IndexRow, Route
from services.gateway.auth import ApiKey, StreamSlots, authorize
from services.gateway.backend_api import Backends, Passed
from services.gateway.explain import explain
from services.gateway.follower import RegistryFollower
from services.gateway.metrics import FrontEnd, GatewayMetrics
from services.gateway.relay import key_passed, relay
from services.gateway.rollout import Rollouts, first_wait
from services.gateway.statistics import statistics

_log = logging.getLogger(__name__)
# Without a registry, the model names a backend has answered for become metric labels,
# up to this many; model names are client input, so anything else is labelled "".
MAX_LABELLED_MODELS = 1000
DEFAULT_MAX_STREAMS_PER_KEY = 64


@dataclass(frozen=True)
class Call:
    """One request naming a model, as a front end read it; `deadline` is event-loop time,
    `protocol` the front end it came in by (the metrics' `protocol` label)."""

    key: ApiKey | None
    head: wire.Head
    request: bytes
    deadline: float
    pin: str | None = None
    passed: Passed = ()
    protocol: FrontEnd = "grpc"


@dataclass(frozen=True)
class Answer:
    """A backend's serialized reply and the version that answered."""

    data: bytes
    version: str


class Router:
    """Routes and forwards the v2 calls that name a model."""

    def __init__(
        self,
        app: GatewayApp,
        backends: Backends,
        metrics: GatewayMetrics,
        *,
        follower: RegistryFollower | None = None,
        tracing: Tracing | None = None,
        max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY,
        streams: StreamSlots | None = None,
    ) -> None:
        self.app = app
        self.backends = backends
        self.metrics = metrics
        self.follower = follower
        self.tracing = tracing or Tracing()
        self._answered: set[str] = set()
        self.rollouts = Rollouts()
        # This process's own count, or one across a supervisor's workers.
        self.streams = streams or StreamSlots(max_streams_per_key)
        # Whether a (model, version, READY versions) is decoupled (services.gateway.relay).
        self.decoupled: dict[tuple[str, str, frozenset[int] | None], bool] = {}

    # Who may call: every front end's calls pass here, so each refusal is counted once.

    def authorize(self, metadata: Sequence[tuple[str, Any]] | None, method: str) -> ApiKey | None:
        """The caller's key (None when auth is off), refused without the method's scope."""
        key = self.app.authenticate(metadata)
        if key is not None:
            authorize(key, method)
        return key

    @contextlib.contextmanager
    def _rate_counted(self, key: ApiKey | None, protocol: FrontEnd) -> Iterator[None]:
        try:
            yield
        except ResourceExhausted:
            self.metrics.rate_limited(key.id if key else "", protocol).inc()
            raise

    async def admit(self, key: ApiKey | None, model: str, protocol: FrontEnd = "grpc") -> None:
        """The key may use the model and is within its rate (a refusal for rate counted)."""
        with self._rate_counted(key, protocol):
            await self.app.admit(key, model)

    async def charge(self, key: ApiKey | None, protocol: FrontEnd = "grpc") -> None:
        """Charge a call that names no model to the key's rate (a refusal counted)."""
        with self._rate_counted(key, protocol):
            await self.app.charge(key)

    def stream(self, key: ApiKey | None) -> contextlib.AbstractContextManager[None]:
        """A slot among the key's concurrent ModelStreamInfer calls, for the stream's life."""
        return self.streams.hold(key)

    def label(self, model: str) -> str:
        """The metric label for a model: its name when the registry or a backend knows it."""
        if self.app.routes is not None:
            return model if model in self.app.routes.models else ""
        known = self.backends.knows(model)
        return model if known or (known is None and model in self._answered) else ""

    def answered_for(self, model: str) -> None:
        if model not in self._answered and len(self._answered) < MAX_LABELLED_MODELS:
            self._answered.add(model)

    async def lookup(self, model: str) -> None:
        """Re-read a model the route table holds stale (a cache miss)."""
        miss = self.follower is not None and self.follower.needs_read(model)
        attributes: dict[str, AttributeValue] = {"maas.model": model, "maas.cache_hit": not miss}
        with self.tracing.span("gateway.route.lookup", attributes):
            if not miss or self.follower is None:
                return
            try:
                await self.follower.refresh(model)
            except ServiceError as exc:
                if self.app.routes is None or model not in self.app.routes.models:
                    raise Unavailable(f"the model registry is unreachable ({exc.status})") from None
                _log.warning(
                    "registry unreachable; routing on the last known versions",
                    extra={"model": model},
                )

    async def route(
        self, key: ApiKey | None, head: wire.Head, pin: str | None, protocol: FrontEnd = "grpc"
    ) -> Route:
        """Admit the key, look the model up and pick the version, recording all on the span."""
        span = trace.get_current_span() if self.tracing.enabled else None
        if span is not None:
            span.set_attribute("maas.model", head.name)
            span.set_attribute("maas.requested_version", head.version)
            if key is not None:
                span.set_attribute("maas.key_id", key.id)
        await self.admit(key, head.name, protocol)
        await self.lookup(head.name)
        route = self.app.route(head.name, head.version, pin)
        if span is not None:
            span.set_attribute("maas.resolved_version", route.fallback or route.version)
            span.set_attribute("maas.canary", route.canary)
        return route

    def settle(self, route: Route) -> tuple[Route, bool]:
        """The route on a version some backend has READY (see services.gateway.rollout), and
        whether it stands in for a version still loading."""
        routes = self.app.routes
        if routes is None or route.number is None:
            return route, False
        ready = self.backends.ready_versions(route.model)
        settled, stand_in = self.rollouts.settle(route, routes.models.get(route.model), ready)
        if stand_in:
            self.backends.want_catalogs()  # to learn soon that the new version is ready
        return settled, stand_in

    async def dispatch(
        self, method: str, call: Call, route: Route, passed: Passed = ()
    ) -> tuple[bytes, Route]:
        """Forward a routed call, on a ready version; the reply and the route it took.

        A version that stopped being ready between the last catalog read and the answer
        (a rollout unloading the old version) is learnt from that answer: the catalogs
        are read again and the call goes once more, to what is ready now.
        """
        settled, stand_in = self.settle(route)
        try:
            wait = first_wait(stand_in)
            return await self._forward(method, call, settled, passed, wait), settled
        except (NotFound, Unavailable):
            if settled is route:
                raise  # not settled on readiness (a number asked for, or nothing known)
        await self.backends.refresh_catalogs(call.deadline)
        settled, _ = self.settle(route)
        return await self._forward(method, call, settled, passed), settled

    async def _forward(
        self, method: str, call: Call, route: Route, passed: Passed, wait: float | None = None
    ) -> bytes:
        """Forward to a backend with the model (a numbered version) ready; a backend that
        knows no aliases (a model directory) gets the alias's number, `route.fallback`."""
        model, deadline = route.model, call.deadline
        in_header = method == "ModelInfer" and len(call.request) >= VERSION_HEADER_FROM
        self.check_known(route)
        request, sent = self._versioned(call, route.version, passed, in_header)
        try:
            return await self._send(method, request, deadline, sent, model, route.version, wait)
        except NotFound:
            if not route.fallback:
                raise
        request, sent = self._versioned(call, route.fallback, passed, in_header)
        return await self._send(method, request, deadline, sent, model, route.fallback, wait)

    def routed_request(self, call: Call, route: Route) -> bytes:
        """The request as it goes to a backend on `route`: NOT_FOUND at once for a model
        or version no backend has in any state (without a registry), and the version
        the route resolved written in."""
        self.check_known(route)
        return self._versioned(call, route.version, (), in_header=False)[0]

    @staticmethod
    def _versioned(
        call: Call, version: str, passed: Passed, in_header: bool
    ) -> tuple[bytes, Passed]:
        """The request and metadata that carry `version` to a backend: the request as it
        came if it says so already; else written into its bytes, or `in_header` (a
        large ModelInfer) in metadata, sparing a copy (services.common.route_version)."""
        if version == call.head.version:
            return call.request, passed
        if in_header:
            return call.request, (*passed, route_version_entry(version))
        return wire.with_version(call.request, version), passed

    def check_known(self, route: Route) -> None:
        """NOT_FOUND at once for a model or version no backend has in any state, when
        there is no registry to say which exist."""
        model = route.model
        if model and self.app.routes is None:
            # Without a registry the backends' catalogs say which models and versions
            # exist: one that none has in any state is NOT_FOUND at once, rather than
            # waited for as if it were loading.
            if self.backends.knows(model) is False:
                self.backends.want_catalogs()
                raise NotFound(f"unknown model '{model}'")
            number = int(route.version) if is_number(route.version) else None
            if number is not None and self.backends.knows(model, number) is False:
                self.backends.want_catalogs()
                raise NotFound(f"model '{model}' has no version '{number}'")

    async def _send(
        self,
        method: str,
        request: bytes,
        deadline: float,
        passed: Passed,
        model: str,
        version: str,
        wait: float | None = None,
    ) -> bytes:
        number = int(version) if is_number(version) else None
        try:
            return await self.backends.unary(
                method, request, deadline, passed, model, number, wait=wait
            )
        except Unavailable:
            self.backends.want_catalogs()
            raise

    async def infer(self, call: Call) -> Answer:
        """Route and forward one inference request, counting it."""
        started, code, answered, model = time.perf_counter(), "INTERNAL", "", ""
        try:
            route = await self.route(call.key, call.head, call.pin, call.protocol)
            model = self.label(route.model)
            with self.metrics.inflight.track_inprogress():
                data, route = await self.dispatch("ModelInfer", call, route, key_passed(call))
            answered = wire.read_head(data).version or route.version
            self.answered_for(route.model)
            model = self.label(route.model)
            canary = str(route.canary).lower()
            self.metrics.routed(model, answered if model else "", canary, call.protocol).inc()
            code = "OK"
            return Answer(data, answered)
        except ServiceError as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.metrics.requests(model, answered if model else "", code, call.protocol).inc()
            elapsed = time.perf_counter() - started
            self.metrics.request_seconds(model, call.protocol).observe(elapsed)

    def stream_infer(self, call: Call) -> AsyncGenerator[bytes, None]:
        """Route one inference request of a stream and relay every response the backend
        makes for it (serialized ModelStreamInferResponse messages), counted as `infer`
        counts; a failure is the request's last response (error_message), so the
        caller's stream goes on. Closing the iterator cancels the backend call."""
        return relay(self, call)

    async def explain(self, call: Call) -> Answer:
        """Route and forward one Explain call as an inference is routed, charging the key's
        evaluation budget too (services.gateway.explain)."""
        return Answer(*await explain(self, call))

    async def model_call(self, method: str, call: Call, *, empty_means_all: bool = False) -> bytes:
        """A forwarded call about a model; `empty_means_all`: an empty name or version asks
        about every model or version (statistics), so it is not resolved, and an answer
        about every model is cut to the models the key may see."""
        head = call.head
        every_model = empty_means_all and not head.name
        if every_model:
            await self.charge(call.key, call.protocol)
        else:
            await self.admit(call.key, head.name, call.protocol)
        route = Route(head.name, head.version, selector=head.version)
        if not empty_means_all or (head.name and head.version):
            await self.lookup(head.name)
            route = self.app.target(head.name, head.version)
        if method == "ModelStatistics":  # every backend serving the model, summed
            data = await statistics(self, call, route)
        else:
            data, _ = await self.dispatch(method, call, route, call.passed)
        if every_model and call.key is not None and call.key.models is not None:
            return _allowed_statistics(data, call.key)
        return data

    async def model_ready(self, call: Call) -> bytes | None:
        """A backend's ModelReady reply, or None when the model or version does not exist
        or no backend has it ready."""
        head = call.head
        await self.admit(call.key, head.name, call.protocol)
        await self.lookup(head.name)
        try:
            route = self.app.target(head.name, head.version)
            data, _ = await self.dispatch("ModelReady", call, route, call.passed)
            return data
        except (NotFound, Unavailable):
            return None

    async def index(self, key: ApiKey | None, request: bytes, deadline: float) -> list[IndexRow]:
        """RepositoryIndex: the registry's rows, or a backend's, limited to the key's models."""
        try:
            ready_only = pb.RepositoryIndexRequest.FromString(request).ready
        except DecodeError:
            raise InvalidArgument("malformed request: not a RepositoryIndexRequest") from None
        rows = self.app.index(key, ready_only)
        if rows is not None:
            return rows
        data = await self.backends.unary("RepositoryIndex", request, deadline)
        listed = pb.RepositoryIndexResponse.FromString(data).models
        return [
            IndexRow(m.name, m.version, m.state, m.reason)
            for m in listed
            if key is None or key.allows(m.name)
        ]


def _allowed_statistics(data: bytes, key: ApiKey) -> bytes:
    """A backend's ModelStatisticsResponse with only the models `key` may see."""
    try:
        reply = pb.ModelStatisticsResponse.FromString(data)
    except DecodeError:
        _log.error("a backend's ModelStatistics reply does not decode")
        raise Internal("internal error") from None
    kept = [s for s in reply.model_stats if key.allows(s.name)]
    return pb.ModelStatisticsResponse(model_stats=kept).SerializeToString()
