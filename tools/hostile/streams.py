"""Streams that never read (item 4): what they hold, and whether it is given back.

Two identical rounds: open N ModelStreamInfer calls, write up to `requests`
requests of the second model, batch 32 (128 KiB, and as large an answer), into each
(a write that does not complete within a second means
the server pushes back, and that stream stops writing), hold them, then cancel
them all. After the first round ends, the second must add under 16 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

from tools.hostile.measure import Meter
from tools.hostile.report import Category
from tools.hostile.requests import other_request
from tools.hostile.system import HostileSystem
from tools.hostile.wire import STREAM, Outcome, channel

WRITE_TIMEOUT_S = 1.0
SETTLE_S = 10.0
MB = 1024 * 1024


async def _round(
    system: HostileSystem, port: str, count: int, requests: int, category: Category
) -> dict[str, int]:
    """One round on `port`: writes that completed, and how the streams ended."""
    payload = other_request(batch=32).SerializeToString()
    auth = system.client_metadata() if port == "gateway" else system.inference_metadata()
    written = 0
    async with channel(system.address(port)) as chan:
        calls = [chan.stream_stream(STREAM)(metadata=auth, timeout=120.0) for _ in range(count)]

        async def fill(call: grpc.aio.StreamStreamCall) -> int:
            done = 0
            for _ in range(requests):
                try:
                    await asyncio.wait_for(call.write(payload), WRITE_TIMEOUT_S)
                except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break
                done += 1
            return done

        written = sum(await asyncio.gather(*(fill(c) for c in calls)))
        for call in calls:
            call.cancel()
        for call in calls:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                code = await call.code()
                category.record(f"{port}: unread stream", Outcome(code.name), ())
    return {"written": written}


async def _settled_rss(meter: Meter) -> dict[str, int]:
    """RSS once it holds still (within 1 MB over 0.5 s), or after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    rss, _ = meter.sampler.read()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now, _ = meter.sampler.read()
        if all(abs(now[s] - rss[s]) < MB for s in rss):
            return now
        rss = now
    return rss


async def run_streams(
    system: HostileSystem, category: Category, meter: Meter, count: int, requests: int
) -> None:
    """Two rounds per port; peak per stream, and what the second round added."""
    held: dict[str, float] = {}
    second: dict[str, float] = {}
    writes: dict[str, list[int]] = {}
    for port in ("gateway", "inference"):
        ends = []
        for _ in range(2):
            with meter.case() as span:
                figures = await _round(system, port, count, requests, category)
            writes.setdefault(port, []).append(figures["written"])
            held[port] = max(held.get(port, 0.0), span.rss_mb.get(port, 0.0))
            ends.append(await _settled_rss(meter))
        second[port] = round((ends[1][port] - ends[0][port]) / MB, 1)
    category.figures["streams"] = count
    category.figures["writes_completed"] = {p: "+".join(map(str, w)) for p, w in writes.items()}
    category.figures["held_mb_per_stream"] = {p: round(mb / count, 2) for p, mb in held.items()}
    category.figures["second_round_mb"] = second
