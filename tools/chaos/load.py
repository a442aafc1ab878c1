"""Steady, bounded load: a fixed number of clients, each pacing its own requests.

Every request is recorded (start, end, status, answering version), so a fault's
window can be cut out afterwards. Answers are checked: y must be x + version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tools.chaos.model import MODEL, WIDTH

OK = "OK"
MAX_FAILURES_LISTED = 50
Stub = pb_grpc.GRPCInferenceServiceStub
Tensor = pb.ModelInferRequest.InferInputTensor
WRONG = "WRONG_ANSWER"


@dataclass(frozen=True)
class Record:
    """One request: monotonic start and end, status name, version that answered."""

    start: float
    end: float
    status: str
    version: str
    detail: str = ""


@dataclass
class Window:
    """What happened to the requests started in [start, end)."""

    sent: int
    failed: int
    statuses: dict[str, int]
    versions: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    recover_s: float
    details: dict[str, int] = field(default_factory=dict)
    # (seconds after the window opened, status) of the first failed requests
    failures_at: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class LoadOptions:
    """Clients, their pace, the deadline each request carries, and the bounds."""

    clients: int = 4
    rate_per_client: float = 25.0
    deadline_s: float = 3.0
    slow_s: float = 1.0  # a request slower than this counts as disrupted
    max_seconds: float = 900.0
    max_requests: int = 2_000_000
    model_version: str = ""


class Clients:
    """`count` client loops, run from `start` until `stop`, `max_seconds` or `max_started`
    calls in all; a loop asks `more()` before each call."""

    def __init__(self, count: int, max_seconds: float, max_started: int) -> None:
        self.count, self.max_seconds, self.max_started = count, max_seconds, max_started
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0
        self._deadline = 0.0

    def start(self, client: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        self._deadline = time.monotonic() + self.max_seconds
        self._tasks = [asyncio.create_task(client(i)) for i in range(self.count)]

    async def stop(self) -> None:
        """Start no more calls and wait for those in flight."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def more(self) -> bool:
        """Whether a loop may make another call (counted as started if so)."""
        if (
            self._stop.is_set()
            or time.monotonic() > self._deadline
            or self._started >= self.max_started
        ):
            return False
        self._started += 1
        return True


@dataclass
class Load:
    """Runs the clients against `target` until stopped or a bound is reached."""

    target: str
    options: LoadOptions = field(default_factory=LoadOptions)
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        o = self.options
        self._clients = Clients(o.clients, o.max_seconds, o.max_requests)

    def start(self) -> None:
        self._clients.start(self._client)

    async def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        await self._clients.stop()

    async def _client(self, index: int) -> None:
        o = self.options
        period = 1.0 / o.rate_per_client
        rng = np.random.default_rng(index)
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            next_at = time.monotonic() + rng.uniform(0, period)
            while self._clients.more():
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + period, time.monotonic())
                self.records.append(await self._one(stub, rng))

    async def _one(self, stub: Stub, rng: np.random.Generator) -> Record:
        x = rng.integers(0, 100, (1, WIDTH)).astype(np.float32)
        request = pb.ModelInferRequest(
            model_name=MODEL,
            model_version=self.options.model_version,
            inputs=[Tensor(name="x", datatype="FP32", shape=[1, WIDTH])],
            raw_input_contents=[x.tobytes()],
        )
        start = time.monotonic()
        try:
            reply = await stub.ModelInfer(request, timeout=self.options.deadline_s)
        except grpc.aio.AioRpcError as exc:
            return Record(start, time.monotonic(), exc.code().name, "", exc.details() or "")
        end = time.monotonic()
        try:
            y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(1, WIDTH)
            right = np.array_equal(y, x + float(reply.model_version))
        except (IndexError, ValueError):
            right = False
        return Record(start, end, OK if right else WRONG, reply.model_version)

    def window(self, start: float, end: float, slow_s: float) -> Window:
        """Requests started in [start, end); recovery ends with the last failed or slow one."""
        chosen = [r for r in self.records if start <= r.start < end]
        statuses: dict[str, int] = {}
        versions: dict[str, int] = {}
        details: dict[str, int] = {}
        for r in chosen:
            statuses[r.status] = statuses.get(r.status, 0) + 1
            if r.status != OK:
                key = f"{r.status}: {r.detail}"[:200]
                details[key] = details.get(key, 0) + 1
            if r.version:
                versions[r.version] = versions.get(r.version, 0) + 1
        latencies = np.array([r.end - r.start for r in chosen]) * 1000 if chosen else np.zeros(1)
        disrupted = [r.end for r in chosen if r.status != OK or r.end - r.start > slow_s]
        return Window(
            sent=len(chosen),
            failed=sum(n for s, n in statuses.items() if s != OK),
            statuses=statuses,
            versions=versions,
            p50_ms=float(np.percentile(latencies, 50)),
            p99_ms=float(np.percentile(latencies, 99)),
            max_ms=float(latencies.max()),
            recover_s=max(disrupted) - start if disrupted else 0.0,
            details=details,
            failures_at=[(round(r.start - start, 3), r.status) for r in chosen if r.status != OK][
                :MAX_FAILURES_LISTED
            ],
        )
