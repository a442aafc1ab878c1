"""The v2 GRPCInferenceService servicer: protobuf in, app call, protobuf out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from opentelemetry import trace

from services.common.deadlines import deadline_of
from services.common.errors import InvalidArgument, ServiceError
from services.common.interceptor import INTERNAL_MESSAGE
from services.common.streams import answer_each
from services.common.telemetry import Tracing
from services.common.version import server_version
from services.inference import convert
from services.inference.app import InferenceApp

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
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, deadline_of(context))

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        """Decode, run and encode one request, each step a span of its own when tracing."""
        if self.tracing.enabled:
            span = trace.get_current_span()
            span.set_attribute("maas.model", request.model_name)
            span.set_attribute("maas.requested_version", request.model_version)
        with self.tracing.span("inference.decode"):
            decoded = convert.infer_request(request, deadline)
        result = await self.app.infer(decoded)
        raw = convert.wants_raw(request)
        with self.tracing.span("inference.encode"):
            if convert.encode_costly(result, raw=raw):
                return await asyncio.to_thread(convert.infer_response, result, raw=raw)
            return convert.infer_response(result, raw=raw)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request runs as it arrives (so stream requests batch together); an
        error answers that request only, and the stream stays open."""
        deadline = deadline_of(context)

        async def answer(
            request: pb.ModelInferRequest | InvalidArgument,
        ) -> pb.ModelStreamInferResponse:
            if isinstance(request, InvalidArgument):
                return pb.ModelStreamInferResponse(error_message=request.message)
            return await self._stream_one(request, deadline)

        async for response in answer_each(_each_message(request_iterator), answer, STREAM_WINDOW):
            yield response

    async def _stream_one(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelStreamInferResponse:
        echo = pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        )
        try:
            with self.tracing.span("inference.stream_request"):
                response = await self._infer(request, deadline)
        except ServiceError as exc:
            return pb.ModelStreamInferResponse(error_message=exc.message, infer_response=echo)
        except Exception:  # noqa: BLE001 - one request's failure must not end the stream
            _log.exception("unexpected error in a stream request")
            return pb.ModelStreamInferResponse(error_message=INTERNAL_MESSAGE, infer_response=echo)
        return pb.ModelStreamInferResponse(infer_response=response)


async def _each_message(
    requests: AsyncIterator[Any],
) -> AsyncIterator[pb.ModelInferRequest | InvalidArgument]:
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
