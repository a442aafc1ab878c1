"""Server interceptors: request decoding, the one error-to-status mapping, call metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.decoding import DecodedStream, Decoder
from services.common.errors import ServiceError
from services.common.metrics import RpcMetrics
from services.common.ratelog import Throttled

_log = logging.getLogger(__name__)
INTERNAL_MESSAGE = "internal error"
# Undecodable requests are the client's doing: one log line per this many seconds.
UNDECODABLE_LOG_SECONDS = 10.0
_PASS_THROUGH = (asyncio.CancelledError, grpc.aio.AbortError)
# Wrapped handlers kept per interceptor. Only methods that have a handler are wrapped
# (an unknown method has none), so this bounds nothing a client can grow by itself.
WRAPPED_METHODS_MAX = 256

Behavior = Callable[..., Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that wraps each method's handler with `_wrap`, built on the
    method's first call and reused while the handler under it is the same object, as a
    registered method's is on every call.

    Building the wrappers (closures, a new RpcMethodHandler) on every call cost about
    15 µs per call for the three interceptors every server has. A handler that an
    inner interceptor makes per call (an auth refusal) is wrapped afresh.
    """

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        entry = self._by_method.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = self._wrap(method, handler)
        if entry is None and len(self._by_method) >= WRAPPED_METHODS_MAX:
            self._by_method.clear()
        self._by_method[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Behavior], Behavior],
    stream: Callable[[Behavior], Behavior],
    *,
    raw_requests: bool = False,
) -> grpc.RpcMethodHandler:
    """The handler with its behavior wrapped: `unary` for unary responses, else `stream`.

    With `raw_requests`, grpc hands the wrapped behavior the serialized request bytes.
    """
    common = {
        "request_deserializer": None if raw_requests else handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **common)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **common)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **common)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **common)
    return handler


def rejecting(handler: grpc.RpcMethodHandler, error: ServiceError) -> grpc.RpcMethodHandler:
    """The handler with its behavior replaced by raising `error` (mapped by ErrorInterceptor):
    how an auth interceptor refuses a call before the servicer runs."""

    async def unary(request: Any, context: Any) -> Any:
        raise error

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        raise error
        yield  # an async generator, as streaming handlers must be

    return rewrap_handler(handler, lambda _: unary, lambda _: stream)


async def responses_of(behavior: Behavior, request: Any, context: Any) -> AsyncIterator[Any]:
    """A streaming behavior's responses: an async generator's items, or nothing from one
    that writes with context.write and returns (grpc_health's Watch does)."""
    result = behavior(request, context)
    if not hasattr(result, "__aiter__"):
        await result
        return
    async for response in result:
        yield response


def _fail(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Set the call's status from `exc`: a ServiceError's own, INTERNAL (logged) otherwise.

    Set on the context, for the handler to return after, rather than raised with
    context.abort: grpc aio keeps the AbortError that abort raises on the call's state,
    whose traceback holds the handler's frames, which hold the context: a reference
    cycle that kept each failed call's request (every copy of its tensors) alive until
    Python's cyclic collector ran. Under a few large bad requests the memory piled up,
    and each new one took fresh pages: 63 MB requests refused by inference cost it
    ~600 ms of kernel time each (zeroing pages), against ~150 ms once freed at once.
    """
    if context.cancelled() or context.done():
        # The caller or the server went away first; there is no one to tell.
        _log.debug("%s ended after its call finished: %r", method, exc)
        return
    if isinstance(exc, ServiceError):
        context.set_code(grpc.StatusCode[exc.status])
        context.set_details(exc.message)
        return
    _log.exception("unexpected error in %s", method, exc_info=exc)
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(INTERNAL_MESSAGE)


def _decoding(
    handler: grpc.RpcMethodHandler, method: str, log: Throttled
) -> Callable[[Any], Any] | None:
    """What turns the bytes grpc hands over into the request (or request stream) the
    handler's behavior takes; None when the behavior takes bytes itself (the gateway)."""
    deserialize = handler.request_deserializer
    if deserialize is None:
        return None
    decode = Decoder(deserialize, method, log)
    if handler.request_streaming:
        return lambda requests: DecodedStream(requests, decode)
    return decode


def _identity(request: Any) -> Any:
    return request


class ErrorInterceptor(WrappingInterceptor):
    """Turns ServiceError into its status and anything else into INTERNAL.

    It also decodes requests (services.common.decoding), so that an undecodable one
    is INVALID_ARGUMENT like any other bad request, not an error inside grpc core.
    """

    def __init__(self) -> None:
        super().__init__()
        self._undecodable = Throttled(_log, UNDECODABLE_LOG_SECONDS)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decoding = _decoding(handler, method, self._undecodable)
        decode = _identity if decoding is None else decoding

        def unary(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(decode(request), context)
                except _PASS_THROUGH:
                    raise
                except Exception as exc:  # noqa: BLE001 - the one place that maps all errors
                    _fail(context, exc, method)
                return None  # the status is set: grpc sends no message

            return handle

        def stream(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for response in responses_of(behavior, decode(request), context):
                        yield response
                except _PASS_THROUGH:
                    raise
                except Exception as exc:  # noqa: BLE001
                    _fail(context, exc, method)

            return handle

        return rewrap_handler(handler, unary, stream, raw_requests=decoding is not None)


class MetricsInterceptor(WrappingInterceptor):
    """Counts every call by method and final status code, and times it."""

    def __init__(self, metrics: RpcMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        metrics = self._metrics

        def done(context: grpc.aio.ServicerContext, started: float, ended: grpc.StatusCode) -> None:
            # A status set by the call (abort, set_code) comes first; a call cancelled
            # by its client ends with CancelledError and sets none.
            code = context.code() or ended
            metrics.requests(method, code.name).inc()
            metrics.latency(method).observe(time.perf_counter() - started)

        def unary(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, ended = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    result = await behavior(request, context)
                    ended = grpc.StatusCode.OK
                    return result
                except asyncio.CancelledError:
                    ended = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    done(context, started, ended)

            return handle

        def stream(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started, ended = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    async for response in responses_of(behavior, request, context):
                        yield response
                    ended = grpc.StatusCode.OK
                except (asyncio.CancelledError, GeneratorExit):
                    ended = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    done(context, started, ended)

            return handle

        return rewrap_handler(handler, unary, stream)
