"""ModelStatistics through the gateway: every backend that serves the model, summed.

Each inference replica counts only what it ran, so one backend's answer is a
fraction of the model's traffic. The gateway asks every healthy backend that has
the model (version) ready -- every healthy backend for the all-models form -- at
most `MAX_CONCURRENT` at a time, all within the caller's deadline, and sums the
replies per (name, version): counts and durations add up, batch statistics merge
by batch size, memory usage by (type, id), and last_inference is the latest.

A backend that fails, or has not answered a little before the caller's deadline,
is left out and logged, and the sum of the others is the answer: statistics are a
monitoring read, and a partial count is more use to a dashboard than an error
while one replica restarts. Only when every
backend failed is the caller given an error (the first backend's, as a forwarded
call would give it). With fewer than two such backends the call takes the usual
forwarding path (retries, waiting for a backend to become ready, its errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common import errors
from services.common.versions import is_number
from services.gateway import wire
from services.gateway.backends import Backend, serving
from services.gateway.forward import NO_BACKEND, REFUSED_GATEWAY, Forwarder, path

if TYPE_CHECKING:
    from services.gateway.app import Route
    from services.gateway.routing import Call, Router

_log = logging.getLogger(__name__)
METHOD = "ModelStatistics"
# How many backends are asked at once; the rest wait for a slot (within the deadline).
MAX_CONCURRENT = 16
# At most this much of the caller's deadline (and a tenth of it) is kept for answering.
MAX_SLACK_SECONDS = 0.25
_DURATIONS = tuple(f.name for f in pb.InferStatistics.DESCRIPTOR.fields)
_BATCH_DURATIONS = ("compute_input", "compute_infer", "compute_output")


async def statistics(router: Router, call: Call, route: Route) -> bytes:
    """The serialized ModelStatisticsResponse for `call` on `route`, summed over every
    backend that serves the model (see the module docstring)."""
    forwarder = router.backends
    if not isinstance(forwarder, Forwarder):
        # Another Backends (a test double) has no pool to fan out over.
        data, _ = await router.dispatch(METHOD, call, route, call.passed)
        return data
    settled, _ = router.settle(route)
    request = router.routed_request(call, settled)
    version = settled.fallback or settled.version
    if settled.fallback:
        request = wire.with_version(call.request, settled.fallback)
    number = int(version) if is_number(version) else None
    targets = serving(forwarder.pool.backends.values(), route.model, number)
    if len(targets) < 2:
        data, _ = await router.dispatch(METHOD, call, route, call.passed)
        return data
    replies = await _ask_each(forwarder, targets, request, call.deadline, call.passed)
    return summed(replies).SerializeToString()


async def _ask_each(
    forwarder: Forwarder,
    targets: list[Backend],
    request: bytes,
    deadline: float,
    metadata: tuple[tuple[str, str], ...],
) -> list[pb.ModelStatisticsResponse]:
    """Every backend's reply that came back in time; the first error if none did."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(MAX_CONCURRENT)
    target = path(METHOD)
    # Backends must answer a little before the caller's deadline, so that a hung one
    # leaves time to answer with the others' sum.
    cutoff = deadline - min(MAX_SLACK_SECONDS, (deadline - loop.time()) / 10)

    async def ask(backend: Backend) -> pb.ModelStatisticsResponse:
        async with slots:
            remaining = cutoff - loop.time()
            if remaining <= 0:
                raise errors.DeadlineExceeded("deadline exceeded before a backend answered")
            backend.state.inflight += 1
            try:
                data = await backend.method(target)(request, timeout=remaining, metadata=metadata)
            finally:
                backend.state.inflight -= 1
        backend.state.succeeded()
        try:
            return pb.ModelStatisticsResponse.FromString(data)
        except DecodeError:
            _log.error("a backend's ModelStatistics reply does not decode")
            raise errors.Internal("internal error") from None

    results = await asyncio.gather(*(ask(b) for b in targets), return_exceptions=True)
    replies: list[pb.ModelStatisticsResponse] = []
    failures: list[errors.ServiceError] = []
    for backend, result in zip(targets, results, strict=True):
        if isinstance(result, pb.ModelStatisticsResponse):
            replies.append(result)
            continue
        if isinstance(result, asyncio.CancelledError):
            raise result
        failures.append(_failure(forwarder, backend, result))
    if not replies:
        raise failures[0]
    if failures:
        _log.warning(
            "ModelStatistics summed without some backends",
            extra={"answered": len(replies), "failed": len(failures)},
        )
    return replies


def _failure(forwarder: Forwarder, backend: Backend, exc: BaseException) -> errors.ServiceError:
    """A backend's failure as the caller would get it; the pool learns of a dead one."""
    if isinstance(exc, errors.ServiceError):
        return exc
    if not isinstance(exc, grpc.aio.AioRpcError):
        _log.error("ModelStatistics to a backend failed", exc_info=exc)
        return errors.Internal("internal error")
    code = exc.code()
    _log.info(
        "a backend's ModelStatistics failed",
        extra={"backend": backend.address, "code": code.name},
    )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        forwarder.pool.suspect(backend)
    if code is grpc.StatusCode.UNAVAILABLE and forwarder.pool.failed(backend):
        return errors.Unavailable(NO_BACKEND)
    if code in REFUSED_GATEWAY:
        return errors.Unavailable(NO_BACKEND)
    return errors.error_from_rpc(exc)


def summed(replies: Iterable[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    """One response with each (name, version)'s statistics summed over `replies`,
    in (name, version) order."""
    totals: dict[tuple[str, str], pb.ModelStatistics] = {}
    for reply in replies:
        for stats in reply.model_stats:
            key = (stats.name, stats.version)
            total = totals.get(key)
            if total is None:
                totals[key] = total = pb.ModelStatistics(name=stats.name, version=stats.version)
            _add(total, stats)
    for total in totals.values():
        _canonical(total)
    return pb.ModelStatisticsResponse(model_stats=[totals[k] for k in sorted(totals)])


def _canonical(total: pb.ModelStatistics) -> None:
    """Batch sizes and memory entries in one order, whatever order the replies came in
    (the backends answer concurrently)."""
    batches = sorted(total.batch_stats, key=lambda b: b.batch_size)
    memory = sorted(total.memory_usage, key=lambda m: (m.type, m.id))
    copies = [pb.InferBatchStatistics.FromString(b.SerializeToString()) for b in batches]
    usages = [pb.MemoryUsage.FromString(m.SerializeToString()) for m in memory]
    del total.batch_stats[:]
    del total.memory_usage[:]
    total.batch_stats.extend(copies)
    total.memory_usage.extend(usages)


def _add(total: pb.ModelStatistics, part: pb.ModelStatistics) -> None:
    total.last_inference = max(total.last_inference, part.last_inference)
    total.inference_count += part.inference_count
    total.execution_count += part.execution_count
    for name in _DURATIONS:
        if part.inference_stats.HasField(name):
            _add_duration(getattr(total.inference_stats, name), getattr(part.inference_stats, name))
    batches = {b.batch_size: b for b in total.batch_stats}
    for batch in part.batch_stats:
        into = batches.get(batch.batch_size)
        if into is None:
            into = batches[batch.batch_size] = total.batch_stats.add(batch_size=batch.batch_size)
        for name in _BATCH_DURATIONS:
            if batch.HasField(name):
                _add_duration(getattr(into, name), getattr(batch, name))
    memory = {(m.type, m.id): m for m in total.memory_usage}
    for usage in part.memory_usage:
        held = memory.get((usage.type, usage.id))
        if held is None:
            held = memory[(usage.type, usage.id)] = total.memory_usage.add(
                type=usage.type, id=usage.id
            )
        held.byte_size += usage.byte_size


def _add_duration(total: pb.StatisticDuration, part: pb.StatisticDuration) -> None:
    total.SetInParent()  # present as in the parts, even when zero
    total.count += part.count
    total.ns += part.ns
