"""The public v2 GRPCInferenceService, served over bytes.

Registered as a generic handler with identity (de)serializers: requests are read
only as far as services.gateway.wire needs (model, version, id), decided on by
GatewayApp, and forwarded as bytes; backend responses go back unchanged. Only the
gateway's own answers (server metadata, readiness, the registry index) are built
from the generated messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata as dist
from typing import TypeAlias

import grpc
from google.protobuf.message import DecodeError
from inference import grpc_predict_v2_pb2 as pb
from opentelemetry import trace

from services.common.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    Unimplemented,
)
from services.common.interceptor import INTERNAL_MESSAGE
from services.common.server import ServiceBinding
from services.common.streams import answer_each
from services.common.telemetry import AttributeValue, Tracing
from services.gateway import wire
from services.gateway.app import VERSION_HEADER, GatewayApp, Route, pinned_version
from services.gateway.auth import ApiKey
from services.gateway.follower import RegistryFollower
from services.gateway.forward import REQUEST_ID, TRACE_CONTEXT, Forwarder, Reply, forwarded
from services.gateway.metrics import GatewayMetrics

_log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
EXTENSIONS = ("model_configuration", "statistics", "binary_tensor_data", "parameters")
Context: TypeAlias = grpc.aio.ServicerContext
Unary = Callable[[bytes, Context], Awaitable[bytes]]


def path(method: str) -> str:
    """The full method path a backend is called at."""
    return f"/{SERVICE_NAME}/{method}"


def _server_version() -> str:
    try:
        return dist.version("maas")
    except dist.PackageNotFoundError:
        return "0.0.0"


class GatewayServicer:
    """Forwards the v2 API to backends, per request, after auth and routing."""

    def __init__(
        self,
        app: GatewayApp,
        forwarder: Forwarder,
        *,
        default_timeout: float,
        metrics: GatewayMetrics,
        stream_window: int = 64,
        follower: RegistryFollower | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.forwarder = forwarder
        self.follower = follower
        self.tracing = tracing or Tracing()
        self.default_timeout = default_timeout
        self.metrics = metrics
        self.stream_window = stream_window
        self.passed_keys = REQUEST_ID if self.tracing.enabled else REQUEST_ID | TRACE_CONTEXT
        self.version = _server_version()

    def binding(self) -> ServiceBinding:
        """How GrpcServer registers this service."""
        unary: dict[str, Unary] = {
            "ServerLive": self.ServerLive,
            "ServerReady": self.ServerReady,
            "ServerMetadata": self.ServerMetadata,
            "ModelReady": self.ModelReady,
            "ModelMetadata": self._model_call("ModelMetadata"),
            "ModelConfig": self._model_call("ModelConfig"),
            "ModelStatistics": self._model_call("ModelStatistics", empty_means_all=True),
            "ModelInfer": self.ModelInfer,
            "RepositoryIndex": self.RepositoryIndex,
            "RepositoryModelLoad": self.RepositoryModelLoad,
            "RepositoryModelUnload": self.RepositoryModelUnload,
        }
        # No (de)serializers: handlers see and return the serialized bytes.
        handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in unary.items()}
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(self.ModelStreamInfer)
        generic = grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
        return ServiceBinding(SERVICE_NAME, lambda s: s.add_generic_rpc_handlers((generic,)))

    # Helpers.

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self.default_timeout
        return asyncio.get_running_loop().time() + remaining

    def _key(self, context: Context) -> ApiKey | None:
        return self.app.authenticate(context.invocation_metadata())

    async def _refresh(self, model: str) -> None:
        """Re-read a model the route cache lacks or holds stale (a cache miss)."""
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

    async def _route(self, key: ApiKey | None, head: wire.Head, pin: str | None) -> Route:
        """Admit the key and pick the version, recording both on the request's span."""
        span = trace.get_current_span() if self.tracing.enabled else None
        if span is not None:
            span.set_attribute("maas.model", head.name)
            span.set_attribute("maas.requested_version", head.version)
            if key is not None:
                span.set_attribute("maas.key_id", key.id)
        try:
            self.app.admit(key, head.name)
        except ResourceExhausted:
            self.metrics.rate_limited(key.id if key else "").inc()
            raise
        await self._refresh(head.name)
        route = self.app.route(head.name, head.version, pin)
        if span is not None:
            span.set_attribute("maas.resolved_version", route.fallback or route.version)
            span.set_attribute("maas.canary", route.canary)
        return route

    # The gateway's own answers.

    async def ServerLive(self, request: bytes, context: Context) -> bytes:
        self.app.charge(self._key(context))
        return pb.ServerLiveResponse(live=True).SerializeToString()

    async def ServerReady(self, request: bytes, context: Context) -> bytes:
        self.app.charge(self._key(context))
        return pb.ServerReadyResponse(ready=self.app.ready()).SerializeToString()

    async def ServerMetadata(self, request: bytes, context: Context) -> bytes:
        self.app.charge(self._key(context))
        reply = pb.ServerMetadataResponse(
            name="maas", version=self.version, extensions=list(EXTENSIONS)
        )
        return reply.SerializeToString()

    async def RepositoryIndex(self, request: bytes, context: Context) -> bytes:
        key = self._key(context)
        self.app.charge(key)
        try:
            ready_only = pb.RepositoryIndexRequest.FromString(request).ready
        except DecodeError:
            raise InvalidArgument("malformed request: not a RepositoryIndexRequest") from None
        rows = self.app.index(key, ready_only)
        if rows is None:
            reply = await self.forwarder.unary(
                path("RepositoryIndex"), request, self._deadline(context)
            )
            if key is None or key.models is None:
                return reply.data
            listed = pb.RepositoryIndexResponse.FromString(reply.data)
            allowed = [m for m in listed.models if m.name in key.models]
            return pb.RepositoryIndexResponse(models=allowed).SerializeToString()
        models = [
            pb.RepositoryIndexResponse.ModelIndex(
                name=r.name, version=r.version, state=r.state, reason=r.reason
            )
            for r in rows
        ]
        return pb.RepositoryIndexResponse(models=models).SerializeToString()

    async def RepositoryModelLoad(self, request: bytes, context: Context) -> bytes:
        self._key(context)
        raise Unimplemented(
            "the gateway does not load models: upload a version to the registry "
            "(`maas models upload`) and point an alias at it; backends follow the registry"
        )

    async def RepositoryModelUnload(self, request: bytes, context: Context) -> bytes:
        self._key(context)
        raise Unimplemented(
            "the gateway does not unload models: archive or delete the version, or move "
            "its aliases, in the registry"
        )

    # Forwarded calls.

    def _model_call(self, method: str, *, empty_means_all: bool = False) -> Unary:
        """A forwarded call naming a model; `empty_means_all`: an empty name or version
        asks about every model or version (statistics), so it is not resolved."""
        target = path(method)

        async def call(request: bytes, context: Context) -> bytes:
            key = self._key(context)
            head = wire.read_head(request)
            self.app.admit(key, head.name)
            fallback = ""
            if not empty_means_all or (head.name and head.version):
                await self._refresh(head.name)
                version, fallback = self.app.resolve_with_fallback(head.name, head.version)
                if version != head.version:
                    request = wire.with_version(request, version)
            reply = await self._forward(target, request, self._deadline(context), fallback)
            return reply.data

        return call

    async def _forward(
        self,
        target: str,
        request: bytes,
        deadline: float,
        fallback: str,
        passed: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        """Forward; a backend that knows no aliases (a model directory) gets the number."""
        try:
            return await self.forwarder.unary(target, request, deadline, passed)
        except NotFound:
            if not fallback:
                raise
        request = wire.with_version(request, fallback)
        return await self.forwarder.unary(target, request, deadline, passed)

    async def ModelReady(self, request: bytes, context: Context) -> bytes:
        key = self._key(context)
        head = wire.read_head(request)
        self.app.admit(key, head.name)
        await self._refresh(head.name)
        try:
            version, fallback = self.app.resolve_with_fallback(head.name, head.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False).SerializeToString()
        if version != head.version:
            request = wire.with_version(request, version)
        deadline = self._deadline(context)
        reply = await self._forward(path("ModelReady"), request, deadline, fallback)
        return reply.data

    async def ModelInfer(self, request: bytes, context: Context) -> bytes:
        metadata = context.invocation_metadata()
        key = self.app.authenticate(metadata)
        passed = forwarded(metadata, self.passed_keys)
        head = wire.read_head(request)
        reply, answered = await self._infer(
            key, head, request, pinned_version(metadata), passed, self._deadline(context)
        )
        # Trailing metadata goes out with the status; a separate initial-metadata send
        # cost about an eighth of the gateway's CPU per request.
        context.set_trailing_metadata(((VERSION_HEADER, answered),))
        return reply

    async def _infer(
        self,
        key: ApiKey | None,
        head: wire.Head,
        request: bytes,
        pin: str | None,
        passed: tuple[tuple[str, str], ...],
        deadline: float,
    ) -> tuple[bytes, str]:
        """Route and forward one inference request (`head` read off it already); the reply
        and the version that answered."""
        started, code, answered, model = time.perf_counter(), "INTERNAL", "", ""
        try:
            route = await self._route(key, head, pin)
            model = route.model  # known to the registry (or to a backend), so bounded
            if route.version != head.version:
                request = wire.with_version(request, route.version)
            with self.metrics.inflight.track_inprogress():
                reply = await self._forward(
                    path("ModelInfer"), request, deadline, route.fallback, passed
                )
            answered = wire.read_head(reply.data).version or route.version
            self.metrics.routed(route.model, answered, str(route.canary).lower()).inc()
            code = "OK"
            return reply.data, answered
        except ServiceError as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.metrics.requests(model, answered, code).inc()
            self.metrics.request_seconds(model).observe(time.perf_counter() - started)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Each request is routed and forwarded on its own, so a stream is balanced per
        request too; an error answers that request only and the stream stays open."""
        metadata = context.invocation_metadata()
        key = self.app.authenticate(metadata)
        pin, passed = pinned_version(metadata), forwarded(metadata, self.passed_keys)
        remaining = context.time_remaining()
        loop = asyncio.get_running_loop()
        stream_deadline = None if remaining is None else loop.time() + remaining

        async def answer(request: bytes) -> bytes:
            deadline = loop.time() + self.default_timeout
            if stream_deadline is not None:
                deadline = min(deadline, stream_deadline)
            return await self._stream_one(key, request, pin, passed, deadline)

        async for response in answer_each(requests, answer, self.stream_window):
            yield response

    async def _stream_one(
        self,
        key: ApiKey | None,
        request: bytes,
        pin: str | None,
        passed: tuple[tuple[str, str], ...],
        deadline: float,
    ) -> bytes:
        head = wire.Head()
        try:
            head = wire.read_head(request)
            reply, _ = await self._infer(key, head, request, pin, passed, deadline)
            return wire.wrap_stream_response(reply)
        except ServiceError as exc:
            return _stream_error(head, exc.message)
        except Exception:  # noqa: BLE001 - one request's failure must not end the stream
            _log.exception("unexpected error in a stream request")
            return _stream_error(head, INTERNAL_MESSAGE)


def _stream_error(head: wire.Head, message: str) -> bytes:
    echo = pb.ModelInferResponse(model_name=head.name, model_version=head.version, id=head.id)
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=echo
    ).SerializeToString()
