"""The server interceptors wrap each method's handler once and reuse it while the
handler under them stays the same; a handler made per call is wrapped afresh."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from services.common.errors import PermissionDenied
from services.common.inflight import InFlight
from services.common.interceptor import (
    WRAPPED_METHODS_MAX,
    ErrorInterceptor,
    MetricsInterceptor,
    WrappingInterceptor,
    rejecting,
)
from services.common.metrics import RpcMetrics

METHOD = "/inference.GRPCInferenceService/ServerLive"


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Context:
    """What the wrappers ask of a servicer context: the status a failed call sets."""

    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None
        self.details: str | None = None

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def set_details(self, details: str) -> None:
        self.details = details

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False


async def live(request: bytes, context: Any) -> bytes:
    return b"live:" + request


SERVICER = grpc.unary_unary_rpc_method_handler(live)


async def chain(
    interceptors: Sequence[grpc.aio.ServerInterceptor], handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """What grpc.aio's server does for one call: each interceptor around the next."""

    async def run(index: int, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if index == len(interceptors):
            return handler
        return await interceptors[index].intercept_service(
            functools.partial(run, index + 1), details
        )

    return await run(0, Details(METHOD))


def interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [
        MetricsInterceptor(RpcMetrics(CollectorRegistry(), "test")),
        ErrorInterceptor(),
        InFlight(),
    ]


async def test_a_registered_method_is_wrapped_once_and_still_runs_its_behavior() -> None:
    stack = interceptors()
    first = await chain(stack, SERVICER)
    second = await chain(stack, SERVICER)
    assert first is second
    assert await first.unary_unary(b"x", Context()) == b"live:x"


async def test_a_handler_made_per_call_is_wrapped_afresh_each_time() -> None:
    stack = interceptors()
    allowed = await chain(stack, SERVICER)
    refusal = rejecting(SERVICER, PermissionDenied("key may not call ServerLive"))
    refused = await chain(stack, refusal)
    assert refused is not allowed
    context = Context()
    assert await refused.unary_unary(b"x", context) is None
    assert (context.status, context.details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "key may not call ServerLive",
    )
    # The next allowed call gets the servicer's behavior again, not the refusal.
    again = await chain(stack, SERVICER)
    assert await again.unary_unary(b"y", Context()) == b"live:y"


async def test_the_cache_keeps_at_most_its_bound_of_methods() -> None:
    built: list[str] = []

    class Counting(WrappingInterceptor):
        def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            built.append(method)
            return handler

    async def servicer(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return SERVICER

    cache = Counting()
    for i in range(WRAPPED_METHODS_MAX + 10):
        await cache.intercept_service(servicer, Details(f"/s/M{i}"))
    assert len(cache._by_method) <= WRAPPED_METHODS_MAX
    # A method still kept is not built again.
    kept = next(iter(cache._by_method))
    count = len(built)
    await cache.intercept_service(servicer, Details(kept))
    assert len(built) == count
