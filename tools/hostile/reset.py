"""HTTP/2 rapid reset (item 5): HEADERS then RST_STREAM, over and over, on one connection.

Meanwhile other clients, each on a channel of its own, call ServerLive in a loop:
their errors and slowest call are what the flood cost everyone else. Whether the
server answered the flood with GOAWAY or closed the connection is noted too.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events

from tools.hostile.report import Category
from tools.hostile.system import HostileSystem
from tools.hostile.wire import Metadata, Outcome, channel, unary

OTHER_CLIENTS = 4
FLUSH_EVERY = 100
Recorder = Callable[[Outcome], None]


@dataclass
class Flood:
    """What the server did about one flood."""

    pairs_sent: int
    goaway: bool
    closed: bool
    seconds: float


def flood(host: str, port: int, pairs: int, authority: str, auth: str) -> Flood:
    """Send `pairs` HEADERS+RST_STREAM; what the server did about it."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    sock = socket.create_connection((host, port), timeout=10)
    sock.setblocking(False)
    conn.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", "/inference.GRPCInferenceService/ServerLive"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if auth:
        headers.append(("authorization", auth))
    sent, goaway, closed = 0, False, False
    start = time.monotonic()
    try:
        for i in range(pairs):
            stream_id = 2 * i + 1
            conn.send_headers(stream_id, headers)
            conn.reset_stream(stream_id)
            sent += 1
            if i % FLUSH_EVERY == FLUSH_EVERY - 1 or i == pairs - 1:
                sock.setblocking(True)
                sock.sendall(conn.data_to_send())
                sock.setblocking(False)
                goaway, closed = _read(sock, conn, goaway)
                if goaway or closed:
                    break
        deadline = time.monotonic() + 2.0
        while not (goaway or closed) and time.monotonic() < deadline:
            time.sleep(0.05)
            goaway, closed = _read(sock, conn, goaway)
    except OSError:
        closed = True
    finally:
        sock.close()
    return Flood(sent, goaway, closed, time.monotonic() - start)


def _read(sock: socket.socket, conn: h2.connection.H2Connection, goaway: bool) -> tuple[bool, bool]:
    """Drain what the server sent: (GOAWAY seen, connection closed)."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return goaway, False
        except OSError:
            return goaway, True
        if not data:
            return goaway, True
        try:
            events = conn.receive_data(data)
        except Exception:  # noqa: BLE001 - a protocol error from the server ends the flood
            return goaway, True
        goaway = goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
        pending = conn.data_to_send()
        if pending:
            try:
                sock.sendall(pending)
            except BlockingIOError:
                pass


@dataclass
class Others:
    """What the other clients saw during one flood."""

    sent: int = 0
    failed: int = 0
    slowest_ms: float = 0.0


async def _other_client(
    address: str, auth: Metadata, done: asyncio.Event, others: Others, record: Recorder
) -> None:
    async with channel(address) as chan:
        while not done.is_set():
            start = time.monotonic()
            outcome = await unary(chan, "ServerLive", b"", auth, 5.0)
            others.sent += 1
            others.failed += not outcome.ok
            others.slowest_ms = max(others.slowest_ms, round((time.monotonic() - start) * 1000, 1))
            record(outcome)


async def run_reset(system: HostileSystem, category: Category, pairs: int) -> None:
    """A flood per port (gateway, inference) with OTHER_CLIENTS calling it meanwhile."""
    paths = system.server_paths()
    notes: dict[str, str] = {}
    failed = 0
    for port in ("gateway", "inference"):
        address = system.address(port)
        auth = system.client_metadata() if port == "gateway" else system.inference_metadata()
        done = asyncio.Event()
        others = Others()

        def record(outcome: Outcome, port: str = port) -> None:
            category.record(f"{port}: other client during the flood", outcome, paths)

        tasks = [
            asyncio.ensure_future(_other_client(address, auth, done, others, record))
            for _ in range(OTHER_CLIENTS)
        ]
        try:
            result = await asyncio.to_thread(
                flood,
                "localhost",
                system.processes[port].port,
                pairs,
                address,
                dict(auth).get("authorization", ""),
            )
        finally:
            done.set()
            await asyncio.gather(*tasks)
        category.record(f"{port}: flood", Outcome("GOAWAY" if result.goaway else "NO_GOAWAY"))
        notes[port] = (
            f"{result.pairs_sent} pairs in {result.seconds:.1f} s, goaway {result.goaway}, "
            f"closed {result.closed}; others failed {others.failed}/{others.sent}, "
            f"slowest {others.slowest_ms:.0f} ms"
        )
        failed += others.failed
    category.figures["flood"] = notes
    category.figures["others_failed"] = failed
