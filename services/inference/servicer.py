"""The v2 GRPCInferenceService servicer: protobuf in, app call, protobuf out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from opentelemetry import trace

from services.common.caller import key_id_of
from services.common.deadlines import deadline_of
from services.common.errors import InvalidArgument, ServiceError
from services.common.interceptor import INTERNAL_MESSAGE
from services.common.route_version import route_version_of
from services.common.streams import answer_streams, close_iterator
from services.common.telemetry import Tracing
from services.common.version import server_version
from services.inference import convert
from services.inference.app import InferenceApp, InferResult
from services.inference.received import Received, received

_log = logging.getLogger(__name__)
SERVER_NAME = "maas"
EXTENSIONS = (
    "model_repository",
    "model_configuration",
    "statistics",
    "binary_tensor_data",
    "parameters",
)
# Requests of one stream that may run at once; reading pauses beyond it (backpressure).
STREAM_WINDOW = 64


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin adapter from the v2 protocol to InferenceApp."""

    def __init__(self, app: InferenceApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing or Tracing()

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.app.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.app.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS)
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return convert.metadata_response(self.app.metadata(request.name, request.version))

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        return convert.config_response(self.app.details(request.name, request.version))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        return convert.statistics_response(self.app.statistics(request.name, request.version))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return convert.index_response(self.app.index(request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        await self.app.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self.app.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(
        self, request: Received, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        metadata = context.invocation_metadata()
        routed(request, metadata)
        return await self._infer(request, deadline_of(context), key_id_of(metadata))

    async def _infer(
        self, received: Received, deadline: float | None, key_id: str
    ) -> pb.ModelInferResponse:
        """Decode, run and encode one request, each step a span of its own when tracing."""
        request = received.message
        if self.tracing.enabled:
            span = trace.get_current_span()
            span.set_attribute("maas.model", request.model_name)
            span.set_attribute("maas.requested_version", request.model_version)
        with self.tracing.span("inference.decode"):
            decoded = convert.infer_request(request, deadline, key_id, received.raws)
        result = await self.app.infer(decoded)
        with self.tracing.span("inference.encode"):
            return await _encoded(result, convert.wants_raw(request))

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[Received],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request runs as it arrives (so stream requests batch together) and gets
        its responses as they are made, the last flagged `triton_final_response`; an
        error answers that request only, and the stream stays open."""
        deadline = deadline_of(context)
        key_id = _key_id(context)

        async def answer(
            request: Received | InvalidArgument,
        ) -> AsyncIterator[pb.ModelStreamInferResponse]:
            if isinstance(request, InvalidArgument):
                yield convert.stream_error(pb.ModelInferResponse(), request.message, request.status)
                return
            async for response in self._stream_one(request, deadline, key_id):
                yield response

        requests = _each_message(request_iterator)
        async for response in answer_streams(requests, answer, STREAM_WINDOW):
            yield response

    async def _stream_one(
        self, received: Received, deadline: float | None, key_id: str
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One request's stream responses; its failure becomes its last response."""
        request = received.message
        echo = pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        )
        try:
            with self.tracing.span("inference.stream_request"):
                decoded = convert.infer_request(request, deadline, key_id, received.raws)
                raw = convert.wants_raw(request)
                empty_final = convert.wants_empty_final(request)
                results = self.app.stream(decoded)
                try:
                    async for result in results:
                        response = await _encoded(result, raw)
                        if not result.final:
                            yield convert.stream_response(response, final=False)
                        elif empty_final and result.decoupled and result.outputs:
                            yield convert.stream_response(response, final=False)
                            yield convert.stream_response(_echo(response), final=True)
                        else:
                            yield convert.stream_response(response, final=True)
                finally:
                    await close_iterator(results)
        except ServiceError as exc:
            yield convert.stream_error(echo, exc.message, exc.status)
        except Exception:  # noqa: BLE001 - one request's failure must not end the stream
            _log.exception("unexpected error in a stream request")
            yield convert.stream_error(echo, INTERNAL_MESSAGE, "INTERNAL")


def _key_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's API key id as the gateway passed it. A call reaches a servicer only
    past the service token check when tokens are configured, so the id is trusted
    as far as the call is."""
    return key_id_of(context.invocation_metadata())


def _echo(response: pb.ModelInferResponse) -> pb.ModelInferResponse:
    """An empty response to the same request (Triton's empty final response)."""
    return pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )


async def _encoded(result: InferResult, raw: bool) -> pb.ModelInferResponse:
    """The response for a result, encoded off the loop when that is costly."""
    if convert.encode_costly(result, raw=raw):
        return await asyncio.to_thread(convert.infer_response, result, raw=raw)
    return convert.infer_response(result, raw=raw)


async def _each_message(
    requests: AsyncIterator[Any],
) -> AsyncIterator[Received | InvalidArgument]:
    """The stream's requests, and in place of a message that did not decode its error
    (services.common.decoding raises it from the stream, which reads on after it)."""
    iterator = aiter(requests)
    while True:
        try:
            request = await anext(iterator)
        except StopAsyncIteration:
            return
        except InvalidArgument as exc:
            yield exc
            continue
        yield request


# The methods whose requests are read by services.inference.received, not parsed whole.
_RECEIVED = ("ModelInfer", "ModelStreamInfer")


class _ReadingReceived:
    """A server as the generated registration sees it: the handlers it registers come
    out with `received` as ModelInfer's and ModelStreamInfer's deserializer."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the generic handler is built again from the rewritten methods."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        rewritten = {name: _reading_received(name, h) for name, h in handlers.items()}
        generic = grpc.method_handlers_generic_handler(service, rewritten)
        self._server.add_generic_rpc_handlers((generic,))
        self._server.add_registered_method_handlers(service, rewritten)


def _reading_received(name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if name not in _RECEIVED:
        return handler
    serialize = handler.response_serializer
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            handler.stream_stream, request_deserializer=received, response_serializer=serialize
        )
    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary, request_deserializer=received, response_serializer=serialize
    )


def routed(request: Received, metadata: Sequence[tuple[str, Any]] | None) -> None:
    """The version the gateway decided, where it came in metadata, as the request's
    own (services.common.route_version)."""
    version = route_version_of(metadata)
    if version is not None:
        request.message.model_version = version


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """The v2 GRPCInferenceService on `server`, its inference requests' raw contents
    read in place (services.inference.received)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, _ReadingReceived(server))
