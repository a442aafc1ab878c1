"""The one server interceptor that maps `ServiceError` to gRPC status codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import ServiceError

_log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error"


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if context.cancelled() or context.done():
        # The caller or the server went away first; there is no one to tell.
        _log.debug("%s ended after its call finished: %r", method, exc)
        return
    if isinstance(exc, ServiceError):
        await context.abort(grpc.StatusCode[exc.status], exc.message)
    _log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


_PASS_THROUGH = (asyncio.CancelledError, grpc.aio.AbortError)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that maps all errors
            await _abort(context, exc, method)

    return handle


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc, method)

    return handle


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns ServiceError into its status and anything else into INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        common = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method), **common
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method), **common
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method), **common
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method), **common
            )
        return handler
