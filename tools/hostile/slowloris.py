"""Slowloris (item 6): idle connections and half-sent openings on every port.

On each gRPC port, `count` connections that send nothing and `count` that send
half of the HTTP/2 preface; on each metrics port and the gateway's HTTP port, the
same with half an HTTP request. Held for `hold_s`: how many the server closed
meanwhile, and how many threads each service grew (the peak is in the figures).
"""

from __future__ import annotations

import asyncio
import contextlib

from tools.hostile.report import Category
from tools.hostile.system import HostileSystem
from tools.hostile.wire import Outcome

HALF_PREFACE = b"PRI * HTTP/2.0\r\n"
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n"


async def _hold(port: int, opening: bytes, hold_s: float) -> bool:
    """Whether the server closed a connection that sent `opening` within `hold_s`."""
    try:
        reader, writer = await asyncio.open_connection("localhost", port)
    except OSError:
        return True
    try:
        if opening:
            writer.write(opening)
            await writer.drain()
        try:
            while True:  # the server may send its SETTINGS first; closed is EOF
                if not await asyncio.wait_for(reader.read(65536), hold_s):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_slowloris(
    system: HostileSystem, category: Category, count: int, hold_s: float
) -> None:
    """Every port at once, `count` of each kind; closed counts per port and kind."""
    targets: list[tuple[str, int, bytes]] = []
    for name in system.services:
        targets.append((f"{name} grpc idle", system.processes[name].port, b""))
        targets.append((f"{name} grpc half preface", system.processes[name].port, HALF_PREFACE))
        for kind, ports in (("metrics", system.metrics_ports), ("http", system.http_ports)):
            if ports.get(name):
                targets.append((f"{name} {kind} idle", ports[name], b""))
                targets.append((f"{name} {kind} half request", ports[name], HALF_REQUEST))
    jobs = [_hold(port, opening, hold_s) for _, port, opening in targets for _ in range(count)]
    results = await asyncio.gather(*jobs)
    closed: dict[str, str] = {}
    for i, (label, _, _) in enumerate(targets):
        mine = results[i * count : (i + 1) * count]
        closed[label] = f"{sum(mine)}/{count}"
        for was_closed in mine:
            category.record(label, Outcome("CLOSED" if was_closed else "OPEN"), ())
    category.figures["hold_s"] = hold_s
    category.figures["connections_per_kind"] = count
    category.figures["closed_total"] = f"{sum(results)}/{len(results)}"
    category.figures["closed"] = closed
