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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from opentelemetry import propagate

from services.common import errors
from services.common.errors import error_from_rpc
from services.common.interceptor import INTERNAL_MESSAGE
from services.common.streams import ERROR_STATUS_PARAM
from services.common.telemetry import Tracing
from services.gateway import wire
from services.gateway.backends import Backend
from services.gateway.metrics import GatewayMetrics
from services.gateway.mux import CallFailed, Unsupported
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
STREAM_METHOD = "ModelStreamInfer"
# The one method multiplexed on Forward streams when the backend has them.
INFER_METHOD = "ModelInfer"
NO_RESPONSE = "the backend ended the stream without a response"
T = TypeVar("T")
StreamCall = Any  # grpc.aio.StreamStreamCall, untyped in grpc's stubs


def path(method: str) -> str:
    """The full path of a v2 method, as a backend is called at it; a method given as a
    full path (another service's, "/pkg.Service/Method") is that path."""
    return method if method.startswith("/") else f"/{SERVICE_NAME}/{method}"


INFER_PATH = path(INFER_METHOD)


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
        wait: float | None = None,
    ) -> bytes:
        """Forward one call of a v2 `method` about `model` (`version`, or any; "": none) to
        a backend that has it ready; `deadline` is event-loop time. `wait`: how long to
        wait for a backend with it ready when none has (default: the pool's)."""
        target = path(method)

        async def send(backend: Backend, remaining: float) -> bytes:
            return await self._call(backend, target, request, remaining, metadata)

        # ModelReady answers at once, since readiness is what it asks about.
        if method == "ModelReady":
            wait = 0.0
        return await self._attempts(send, deadline, self._wait(wait), model, version)

    def _wait(self, wait: float | None) -> float:
        return self.pool.options.ready_wait_seconds if wait is None else wait

    async def stream(
        self,
        request: bytes,
        deadline: float,
        metadata: tuple[tuple[str, str], ...] = (),
        model: str = "",
        version: int | None = None,
        wait: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Forward one inference request over a ModelStreamInfer call of its own to one
        backend that has the model ready, and yield every response it makes (serialized
        ModelStreamInferResponse) until the backend ends the call.

        Until the first response the call is retried elsewhere as a unary one is; a
        response with an error_message raises its ServiceError (by the status the
        backend gives it), as a failed call does. A response is asked of the backend
        only once the one before is taken, so a slow reader is pushed back (grpc's flow
        control) rather than responses piling up here; closing the iterator cancels
        the backend call.
        """
        target = path(STREAM_METHOD)

        async def open_call(
            backend: Backend, remaining: float
        ) -> tuple[Backend, StreamCall, bytes]:
            call, first = await self._open_stream(backend, target, request, remaining, metadata)
            return backend, call, first

        opened = await self._attempts(open_call, deadline, self._wait(wait), model, version)
        backend, call, first = opened
        responses = 1
        try:
            yield first
            while True:
                try:
                    data = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise _cut(exc, responses) or self._relay_error(exc) from None
                if data is grpc.aio.EOF:
                    return
                assert isinstance(data, bytes)
                if wire.stream_failed(data):
                    raise _backend_error(data)
                responses += 1
                yield data
        finally:
            call.cancel()
            backend.state.inflight -= 1

    async def _attempts(
        self,
        send: Callable[[Backend, float], Awaitable[T]],
        deadline: float,
        wait: float,
        model: str,
        version: int | None,
    ) -> T:
        """`send` to a backend with the model ready, another after an UNAVAILABLE (or a
        NOT_FOUND for a number), up to max_attempts within `deadline`; waiting up to
        `wait` for some backend to have the model ready when none has."""
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        error: errors.ServiceError = self._nobody(model, version)
        # Waiting for a backend to become ready is bounded per call, and by the deadline.
        wait_until = loop.time() + wait
        attempt = 0
        while attempt < self.max_attempts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errors.DeadlineExceeded("deadline exceeded before a backend answered")
            backend = self.pool.pick(tried, model, version)
            if backend is None:
                if await self.pool.wait_for_change(min(deadline, wait_until) - loop.time()):
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
                    return await send(backend, remaining)
            except asyncio.CancelledError:
                # The caller's deadline ends this call here before the backend's does.
                if loop.time() >= deadline - DEADLINE_SLACK:
                    self.pool.suspect(backend)
                raise
            except (grpc.aio.AioRpcError, _Refused, CallFailed) as exc:
                retry = self._retry(exc, backend, model, version)
                if retry is None:
                    raise self._relay_error(exc) from None
                error = retry
        raise error

    def _retry(
        self,
        exc: grpc.aio.AioRpcError | _Refused | CallFailed,
        backend: Backend,
        model: str,
        version: int | None,
    ) -> errors.ServiceError | None:
        """What a failed attempt says of the backend; the error to give if no other
        backend answers, or None when the failure is the caller's answer."""
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
            return errors.Unavailable(NO_BACKEND)
        # A CANCELLED that reaches us as an answer was the backend's doing, not our
        # caller's (that ends this call with CancelledError): it is stopping and cut the
        # call short (a drain that ran out), so another backend may answer it.
        stopping = code is grpc.StatusCode.CANCELLED
        if code is not grpc.StatusCode.UNAVAILABLE and not stale and not stopping:
            return None
        if stopping:
            # Not a verdict on the model: the backend is checked again before new calls.
            self.pool.failed(backend)
            return errors.Unavailable(NO_BACKEND)
        connection_failed = self.pool.failed(backend, model, version)
        _log.info(
            "backend could not answer, trying another",
            extra={"backend": backend.address, "connection": connection_failed},
        )
        return errors.Unavailable(NO_BACKEND) if connection_failed else error_from_rpc(exc)

    @staticmethod
    def _relay_error(exc: grpc.aio.AioRpcError | _Refused | CallFailed) -> errors.ServiceError:
        """A backend's failure as the caller gets it."""
        if isinstance(exc, _Refused):
            return exc.error
        if exc.code() in REFUSED_GATEWAY:
            return errors.Unavailable(NO_BACKEND)
        return error_from_rpc(exc)

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

    async def _call(
        self,
        backend: Backend,
        path: str,
        request: bytes,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> bytes:
        state = backend.state
        state.inflight += 1
        try:
            mux = backend.mux
            if (
                mux is not None
                and path == INFER_PATH
                and len(request) <= mux.max_request_bytes
                and mux.supported
            ):
                try:
                    data = await mux.call(
                        INFER_METHOD, request, timeout, backend.credentials, self._passed(metadata)
                    )
                except Unsupported:
                    data = await backend.method(path)(request, timeout=timeout, metadata=metadata)
            else:
                data = await backend.method(path)(request, timeout=timeout, metadata=metadata)
        finally:
            state.inflight -= 1
        state.succeeded()
        return data

    def _passed(self, metadata: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """A frame's metadata: the call's, and this gateway's span when it traces (what
        its client interceptor sends on a unary call)."""
        passed = dict(metadata)
        if self.tracing.enabled:
            propagate.inject(passed)
        return passed

    @staticmethod
    async def _open_stream(
        backend: Backend,
        path: str,
        request: bytes,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> tuple[StreamCall, bytes]:
        """A ModelStreamInfer call to `backend` carrying the one request (then half
        closed), and its first response; a first response that is an error raises.
        The call counts as in flight on the backend until the caller ends it."""
        state = backend.state
        # No serializers: the request and responses are bytes as they are.
        call: StreamCall = backend.channel.stream_stream(path)(
            timeout=timeout, metadata=backend.metadata(metadata)
        )
        state.inflight += 1
        try:
            await call.write(request)
            await call.done_writing()
            data = await call.read()
            if data is grpc.aio.EOF:
                raise _Refused(errors.Internal(NO_RESPONSE), grpc.StatusCode.INTERNAL)
            assert isinstance(data, bytes)
            if wire.stream_failed(data):
                error = _backend_error(data)
                raise _Refused(error, getattr(grpc.StatusCode, error.status, None))
        except BaseException:
            call.cancel()
            state.inflight -= 1
            raise
        state.succeeded()
        return call, data


class _Refused(Exception):
    """A backend's error_message answer to a stream request, read like a failed call
    (code, details), so a stream's first answer is retried as a unary call is."""

    def __init__(self, error: errors.ServiceError, code: grpc.StatusCode | None) -> None:
        super().__init__(error.message)
        self.error = error
        self._code = code or grpc.StatusCode.UNKNOWN

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.error.message


def _cut(exc: grpc.aio.AioRpcError, responses: int) -> errors.ServiceError | None:
    """A backend stream that broke after `responses` responses of the answer (the
    backend stopped or went away): UNAVAILABLE saying so, since its answer is partly
    out and cannot be retried. None for a status that is the backend's answer."""
    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return None
    return errors.Unavailable(
        f"the inference backend stopped after {responses} responses of this answer "
        f"({exc.code().name}); an answer that has begun is not retried"
    )


def _backend_error(data: bytes) -> errors.ServiceError:
    """The error a backend's error_message response gives (its status by the
    maas_error_status parameter inference sets; UNKNOWN without one)."""
    try:
        response = pb.ModelStreamInferResponse.FromString(data)
    except DecodeError:
        _log.error("a backend's ModelStreamInfer response does not decode")
        return errors.Internal(INTERNAL_MESSAGE)
    param = response.infer_response.parameters.get(ERROR_STATUS_PARAM)
    status = param.string_param if param is not None else "UNKNOWN"
    return errors.error_from_status(status, response.error_message)
