"""The public v2 GRPCInferenceService, served over bytes: a thin converter.

Registered as a generic handler with identity (de)serializers: a request is read
only as far as services.gateway.wire needs (model, version, id), handed to the
app layer (services.gateway.routing), and the backend's reply goes back
unchanged. Only the gateway's own answers (server metadata, readiness, the
repository index) are built from the generated messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.deadlines import deadline_of, earliest
from services.common.errors import ServiceError, Unimplemented
from services.common.server import ServiceBinding
from services.common.streams import answer_streams
from services.common.version import server_version
from services.gateway import explain, wire
from services.gateway.app import (
    EXTENSIONS,
    NO_LOAD,
    NO_UNLOAD,
    SERVER_NAME,
    VERSION_HEADER,
    GatewayApp,
    pinned_version,
)
from services.gateway.auth import ApiKey
from services.gateway.forward import REQUEST_ID, SERVICE_NAME, TRACE_CONTEXT, forwarded
from services.gateway.relay import stream_error
from services.gateway.routing import Call, Router

_log = logging.getLogger(__name__)
Context: TypeAlias = grpc.aio.ServicerContext
Unary = Callable[[bytes, Context], Awaitable[bytes]]
__all__ = ["SERVICE_NAME", "GatewayServicer"]


class GatewayServicer:
    """Converts v2 calls for the app layer: auth and routing happen there."""

    def __init__(
        self,
        app: GatewayApp,
        router: Router,
        *,
        default_timeout: float,
        stream_window: int = 64,
        trace_passed_on: bool = True,
    ) -> None:
        self.app = app
        self.router = router
        self.default_timeout = default_timeout
        self.stream_window = stream_window
        # While the gateway traces itself, its client interceptor sends its own context.
        self.passed_keys = REQUEST_ID | TRACE_CONTEXT if trace_passed_on else REQUEST_ID
        self.version = server_version()

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

    def explain_binding(self) -> ServiceBinding:
        """How GrpcServer registers maas.explain.v1.Explainer (bytes in and out, as the
        v2 service; reflection lists it by this name)."""
        handlers = {explain.METHOD: grpc.unary_unary_rpc_method_handler(self.Explain)}
        generic = grpc.method_handlers_generic_handler(explain.SERVICE_NAME, handlers)
        return ServiceBinding(
            explain.SERVICE_NAME, lambda s: s.add_generic_rpc_handlers((generic,))
        )

    # Conversions.

    def _deadline(self, context: Context) -> float:
        return deadline_of(context, self.default_timeout)

    def _key(self, context: Context, method: str) -> ApiKey | None:
        return self.router.authorize(context.invocation_metadata(), method)

    def _call(self, request: bytes, context: Context, method: str) -> Call:
        key = self._key(context, method)
        return Call(key, wire.read_request(request), request, self._deadline(context))

    # The gateway's own answers.

    async def ServerLive(self, request: bytes, context: Context) -> bytes:
        await self.router.charge(self._key(context, "ServerLive"))
        return pb.ServerLiveResponse(live=True).SerializeToString()

    async def ServerReady(self, request: bytes, context: Context) -> bytes:
        await self.router.charge(self._key(context, "ServerReady"))
        return pb.ServerReadyResponse(ready=self.app.ready()).SerializeToString()

    async def ServerMetadata(self, request: bytes, context: Context) -> bytes:
        await self.router.charge(self._key(context, "ServerMetadata"))
        reply = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self.version, extensions=list(EXTENSIONS)
        )
        return reply.SerializeToString()

    async def RepositoryIndex(self, request: bytes, context: Context) -> bytes:
        key = self._key(context, "RepositoryIndex")
        await self.router.charge(key)
        rows = await self.router.index(key, request, self._deadline(context))
        models = [
            pb.RepositoryIndexResponse.ModelIndex(
                name=r.name, version=r.version, state=r.state, reason=r.reason
            )
            for r in rows
        ]
        return pb.RepositoryIndexResponse(models=models).SerializeToString()

    async def RepositoryModelLoad(self, request: bytes, context: Context) -> bytes:
        self._key(context, "RepositoryModelLoad")
        raise Unimplemented(NO_LOAD)

    async def RepositoryModelUnload(self, request: bytes, context: Context) -> bytes:
        self._key(context, "RepositoryModelUnload")
        raise Unimplemented(NO_UNLOAD)

    # Forwarded calls.

    def _model_call(self, method: str, *, empty_means_all: bool = False) -> Unary:
        async def call(request: bytes, context: Context) -> bytes:
            parsed = self._call(request, context, method)
            return await self.router.model_call(method, parsed, empty_means_all=empty_means_all)

        return call

    async def ModelReady(self, request: bytes, context: Context) -> bytes:
        reply = await self.router.model_ready(self._call(request, context, "ModelReady"))
        return (
            reply if reply is not None else pb.ModelReadyResponse(ready=False).SerializeToString()
        )

    async def ModelInfer(self, request: bytes, context: Context) -> bytes:
        metadata = context.invocation_metadata()
        call = Call(
            self.router.authorize(metadata, "ModelInfer"),
            wire.read_request(request),
            request,
            self._deadline(context),
            pinned_version(metadata),
            forwarded(metadata, self.passed_keys),
        )
        answer = await self.router.infer(call)
        # Trailing metadata goes out with the status; a separate initial-metadata send
        # cost about an eighth of the gateway's CPU per request.
        context.set_trailing_metadata(((VERSION_HEADER, answer.version),))
        return answer.data

    async def Explain(self, request: bytes, context: Context) -> bytes:
        """maas.explain.v1.Explainer/Explain, converted as ModelInfer is (an
        ExplainRequest's head has ModelInferRequest's field numbers)."""
        metadata = context.invocation_metadata()
        call = Call(
            self.router.authorize(metadata, explain.METHOD),
            wire.read_request(request),
            request,
            self._deadline(context),
            pinned_version(metadata),
            forwarded(metadata, self.passed_keys),
        )
        answer = await self.router.explain(call)
        context.set_trailing_metadata(((VERSION_HEADER, answer.version),))
        return answer.data

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Each request is routed on its own (so a stream is balanced per request too)
        and sent to one backend, every response the backend makes for it passed on
        (services.gateway.relay); an error answers that request only and the stream
        stays open."""
        metadata = context.invocation_metadata()
        key = self.router.authorize(metadata, "ModelStreamInfer")
        pin, passed = pinned_version(metadata), forwarded(metadata, self.passed_keys)
        stream_deadline = deadline_of(context)
        loop = asyncio.get_running_loop()

        def answer(request: bytes) -> AsyncIterator[bytes]:
            deadline = earliest(loop.time() + self.default_timeout, stream_deadline)
            try:
                head = wire.read_request(request)
            except wire.BadHead as exc:
                return _one(stream_error(exc.head, exc.message, exc.status))
            except ServiceError as exc:
                return _one(stream_error(wire.Head(), exc.message, exc.status))
            return self.router.stream_infer(Call(key, head, request, deadline, pin, passed))

        with self.router.stream(key):
            async for response in answer_streams(requests, answer, self.stream_window):
                yield response


async def _one(response: bytes) -> AsyncIterator[bytes]:
    yield response
