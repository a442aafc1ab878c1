"""An HTTP/2 rapid-reset flood (issue B, item 5): other clients see no error, and the
flooding connection has its streams refused and is sent GOAWAY.

The cause was grpc core's defaults, not maas: a bare grpc.aio server does the same.
With no cap on concurrent streams, every reset stream became a call in the server's
one queue of calls not yet picked up, and past 1000 of those grpc core cancels new
calls from any connection (CANCELLED for 5 of 47 unrelated calls). With
max_concurrent_streams set (and overload protection, grpc core's default), grpc core
refuses the flood's streams on its own connection (RST_STREAM REFUSED_STREAM) before
they reach that queue. grpc core has
no setting that sends GOAWAY to a client that floods and reads, so every connection
is sent GOAWAY at max_connection_age (short here): that is what bounds its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.exceptions
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from services.common.server import GrpcServer
from services.registry.settings import RegistrySettings

PAIRS = 20_000  # HEADERS + RST_STREAM pairs, as in the reproduction
AGE = 3.0  # seconds: the server's max_connection_age in this test
WAIT = 20.0  # the longest the flood may stay open after its last frame
CHECK = "/grpc.health.v1.Health/Check"
REFUSED_STREAM = 0x7


@dataclass
class Flood:
    """What the flooding connection saw, counted from the server's raw frames."""

    sent: int = 0
    refused: int = 0
    goaway: bool = False
    closed: bool = False
    unread: bytearray = field(default_factory=bytearray)

    def received(self, data: bytes) -> None:
        """Count REFUSED_STREAM resets and GOAWAY; h2 drops frames for streams it reset."""
        if not data:
            self.closed = True
        self.unread += data
        while len(self.unread) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.unread[:9]))
            if len(self.unread) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self.unread[9 : 9 + length])))
            del self.unread[: 9 + length]
            if isinstance(frame, GoAwayFrame):
                self.goaway = True
            elif isinstance(frame, RstStreamFrame) and frame.error_code == REFUSED_STREAM:
                self.refused += 1


def flood(port: int, result: Flood) -> None:
    """Send PAIRS HEADERS+RST_STREAM pairs on one connection, reading what comes back."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", CHECK),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:

        def receive(data: bytes) -> None:
            result.received(data)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.receive_data(data)  # so that SETTINGS and PINGs are acknowledged
            sock.sendall(conn.data_to_send())

        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        try:
            while result.sent < PAIRS and not (result.goaway or result.closed):
                for _ in range(100):
                    stream = conn.get_next_available_stream_id()
                    conn.send_headers(stream, headers)
                    conn.reset_stream(stream)
                    result.sent += 1
                sock.sendall(conn.data_to_send())
                sock.setblocking(False)
                try:
                    receive(sock.recv(1 << 20))
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            while not (result.goaway or result.closed):
                receive(sock.recv(1 << 20))
        except (OSError, h2.exceptions.ProtocolError):
            result.closed = True


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    settings = RegistrySettings(port=0, metrics_port=0, max_connection_age_seconds=AGE)
    server = GrpcServer(settings, bindings=[])
    await server.start()
    yield server
    await server.shutdown(0)


async def test_a_rapid_reset_flood_is_refused_closed_and_harms_no_one_else(
    server: GrpcServer,
) -> None:
    result = Flood()
    flooder = threading.Thread(target=flood, args=(server.port, result), daemon=True)
    codes: dict[str, int] = {}
    slowest = 0.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        flooder.start()
        started = time.monotonic()
        while flooder.is_alive() and time.monotonic() - started < 60:
            sent = time.monotonic()
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            slowest = max(slowest, time.monotonic() - sent)
            codes[code] = codes.get(code, 0) + 1
            await asyncio.sleep(0.005)
    await asyncio.to_thread(flooder.join, WAIT)
    print(f"flood: {result}, other calls: {codes}, slowest {slowest:.3f} s")
    assert set(codes) == {"OK"}, f"other clients saw {codes} during the flood"
    assert result.refused > 0, "no stream of the flood was refused: no cap on streams?"
    assert result.goaway or result.closed, "the flooding connection is still open"
