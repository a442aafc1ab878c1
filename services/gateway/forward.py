"""Forwarding one call: pick a backend, retry UNAVAILABLE elsewhere, keep the deadline.

A call about a model goes only to backends that have that model (version) ready.
A backend that answers UNAVAILABLE about it, or NOT_FOUND for a version number,
has it marked not ready and the call is tried on another. Errors a backend
returns pass through with their code and message. Connection failures are the
exception: their text names backend addresses, so the caller gets a fixed
UNAVAILABLE message instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from services.common import errors
from services.common.errors import error_from_rpc
from services.common.telemetry import Tracing
from services.gateway.backends import Backend
from services.gateway.metrics import GatewayMetrics
from services.gateway.pool import SERVICE_NAME, BackendPool

_log = logging.getLogger(__name__)
NO_BACKEND = "no inference backend is available"
# A call cancelled this close to its deadline ran out of time (rather than its caller
# going away first).
DEADLINE_SLACK = 0.05
# Caller metadata worth passing on; credentials and routing headers stay here. Trace
# context is passed on as it came only while the gateway does not trace itself (when it
# does, its client interceptor sends its own span's context).
REQUEST_ID = frozenset({"x-request-id"})
# A backend's answer about the gateway's credentials, never passed on as the caller's.
REFUSED_GATEWAY = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
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
        model: str = "",
        version: int | None = None,
    ) -> bytes:
        """Forward one call of a v2 `method` about `model` (`version`, or any; "": none) to
        a backend that has it ready; `deadline` is event-loop time."""
        target = path(method)
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        error: errors.ServiceError = self._nobody(model, version)
        # Waiting for a backend to become ready is bounded per call, and by the deadline;
        # ModelReady answers at once, since readiness is what it asks about.
        wait_until = loop.time() + (
            0.0 if method == "ModelReady" else self.pool.options.ready_wait_seconds
        )
        attempt = 0
        while attempt < self.max_attempts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errors.DeadlineExceeded("deadline exceeded before a backend answered")
            backend = self.pool.pick(tried, model, version)
            if backend is None:
                wait = min(deadline, wait_until) - loop.time()
                if await self.pool.wait_for_change(wait):
                    continue
                break
            attempt += 1
            tried.add(backend.address)
            if attempt > 1 and self.metrics is not None:
                self.metrics.retries.inc()
            try:
                with self.tracing.span(
                    "gateway.backend",
                    {"maas.backend": backend.address, "maas.attempt": attempt - 1},
                ):
                    data = await self._call(backend, target, request, remaining, metadata)
            except asyncio.CancelledError:
                # The caller's deadline ends this call here before the backend's does.
                if loop.time() >= deadline - DEADLINE_SLACK:
                    self.pool.suspect(backend)
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                stale = code is grpc.StatusCode.NOT_FOUND and version is not None
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    # Hung, or cut off: no new call goes there until a health Check passes.
                    self.pool.suspect(backend)
                if code in REFUSED_GATEWAY:
                    # The gateway's own service token is wrong: a misconfiguration the
                    # caller can do nothing about, and not a verdict on the caller's key.
                    _log.error(
                        "backend refused the gateway's service token",
                        extra={"backend": backend.address, "code": code.name},
                    )
                    error = errors.Unavailable(NO_BACKEND)
                    continue
                if code is not grpc.StatusCode.UNAVAILABLE and not stale:
                    raise error_from_rpc(exc) from None
                connection_failed = self.pool.failed(backend, model, version)
                _log.info(
                    "backend could not answer, trying another",
                    extra={"backend": backend.address, "connection": connection_failed},
                )
                error = errors.Unavailable(NO_BACKEND) if connection_failed else error_from_rpc(exc)
                continue
            return data
        raise error

    def _nobody(self, model: str, version: int | None) -> errors.ServiceError:
        """The error when no backend can take a call."""
        if not model or not self.pool.healthy():
            return errors.Unavailable(NO_BACKEND)
        what = f"model '{model}'" + (f" version {version}" if version is not None else "")
        return errors.Unavailable(f"no inference backend has {what} ready")

    def ready_versions(self, model: str) -> frozenset[int] | None:
        """The versions of `model` some healthy backend has READY (None: unknown)."""
        return self.pool.ready_versions(model)

    def knows(self, model: str, version: int | None = None) -> bool | None:
        """Whether a healthy backend knows `model` (that version, or any; None: unknown)."""
        return self.pool.knows(model, version)

    def want_catalogs(self) -> None:
        """What backends have may have changed: read it again soon."""
        self.pool.want_catalogs()

    async def refresh_catalogs(self, deadline: float) -> None:
        """Read what the backends have now, waiting at most until `deadline`."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.pool.refresh_catalogs()), remaining)

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
