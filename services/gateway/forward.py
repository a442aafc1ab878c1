"""Forwarding one call: pick a backend, retry UNAVAILABLE elsewhere, keep the deadline.

Errors a backend returns pass through with their code and message. Connection
failures are the exception: their text names backend addresses, so the caller
gets a fixed UNAVAILABLE message instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from inference import grpc_predict_v2_pb2 as pb

from services.common import errors
from services.common.errors import error_from_rpc
from services.common.telemetry import Tracing
from services.gateway.metrics import GatewayMetrics
from services.gateway.pool import Backend, BackendPool

_log = logging.getLogger(__name__)
NO_BACKEND = "no inference backend is available"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# Caller metadata worth passing on; credentials and routing headers stay here. Trace
# context is passed on as it came only while the gateway does not trace itself (when it
# does, its client interceptor sends its own span's context).
REQUEST_ID = frozenset({"x-request-id"})
TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})


def path(method: str) -> str:
    """The full path of a v2 method, as a backend is called at it."""
    return f"/{SERVICE_NAME}/{method}"


def forwarded(
    metadata: Sequence[tuple[str, object]] | None, keys: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """The caller's metadata entries (named in `keys`) that the backend gets too."""
    return tuple((k, v) for k, v in metadata or () if k in keys and isinstance(v, str))


class Forwarder:
    """Sends serialized requests to backends, with bounded retries within a deadline."""

    def __init__(
        self,
        pool: BackendPool,
        max_attempts: int,
        metrics: GatewayMetrics | None = None,
        *,
        tracing: Tracing | None = None,
    ) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.tracing = tracing or Tracing()

    async def unary(
        self,
        method: str,
        request: bytes,
        deadline: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """Forward one call of a v2 `method`; `deadline` is event-loop time."""
        target = path(method)
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        error: errors.ServiceError = errors.Unavailable(NO_BACKEND)
        for attempt in range(self.max_attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errors.DeadlineExceeded("deadline exceeded before a backend answered")
            backend = self.pool.pick(tried)
            if backend is None:
                break
            tried.add(backend.address)
            if attempt and self.metrics is not None:
                self.metrics.retries.inc()
            try:
                with self.tracing.span(
                    "gateway.backend", {"maas.backend": backend.address, "maas.attempt": attempt}
                ):
                    data = await self._call(backend, target, request, remaining, metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc(exc) from None
                connection_failed = self.pool.failed(backend)
                _log.info(
                    "backend unavailable, trying another",
                    extra={"backend": backend.address, "connection": connection_failed},
                )
                error = errors.Unavailable(NO_BACKEND) if connection_failed else error_from_rpc(exc)
                continue
            return data
        raise error

    @staticmethod
    async def _call(
        backend: Backend,
        path: str,
        request: bytes,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> bytes:
        state = backend.state
        state.inflight += 1
        try:
            data: bytes = await backend.method(path)(request, timeout=timeout, metadata=metadata)
        finally:
            state.inflight -= 1
        state.succeeded()
        return data
