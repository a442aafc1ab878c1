"""The HTTP listener: uvicorn (uvloop, httptools, keep-alive) run inside the gateway's loop.

uvicorn is started on a socket bound here, so a port in use is PortInUse like the
gRPC and metrics ports, and port 0 reports the port it got. Its own signal
handling is off: the gateway's shutdown stops it. Bounded for slow clients: at
most `max_connections` connections, request headers within `header_timeout`
seconds and `max_header_bytes`, idle keep-alive connections closed after
`keep_alive` seconds. With --tls-cert it serves HTTPS, following the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.server import PortInUse
from services.common.settings import ServiceSettings
from services.common.tls import ServerTls

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpOptions:
    """Where the listener binds and how it bounds its clients."""

    host: str
    port: int
    max_connections: int = 1000
    keep_alive: float = 75.0
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    # A --workers worker: SO_REUSEPORT beside its siblings (services/common/workers.py).
    reuse_port: bool = False


class _Protocol(HttpToolsProtocol):
    """httptools with a deadline and a size cap on each request's headers (slowloris)."""

    header_timeout = 10.0
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes: int | None = None

    def _await_headers(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_bytes is not None:
            # The bytes up to the end of the headers, if they end in this chunk.
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4
            if self._header_bytes > self.max_header_bytes:
                self._stop_header_timer()
                self._header_bytes = None
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        self._header_bytes = None
        super().on_headers_complete()

    def on_message_begin(self) -> None:
        # A request's first bytes: its headers are due (an idle keep-alive connection
        # is uvicorn's keep-alive timeout's to close, not this one's).
        if self._header_timer is None:
            self._await_headers()
        super().on_message_begin()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._header_bytes = 0  # what comes next is the next request's headers


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers, telling when it serves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.serving.set()


def _bind(
    host: str, port: int, settings: ServiceSettings, reuse_port: bool = False
) -> socket.socket:
    """A socket bound to host:port (`[::]` dual-stack); PortInUse when taken."""
    address = host.strip("[]") or None
    family, kind, proto, _, where = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(where)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port, "http_port", settings) from None
        raise
    sock.setblocking(False)
    return sock


class HttpServer:
    """One uvicorn server for an ASGI app: `start()` returns the port, `stop()` drains."""

    def __init__(self, app: ASGIApp, options: HttpOptions, settings: ServiceSettings) -> None:
        self.app = app
        self.options = options
        self.settings = settings
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; the bound port."""
        o = self.options
        protocol = type(
            "Protocol",
            (_Protocol,),
            {"header_timeout": o.header_timeout, "max_header_bytes": o.max_header_bytes},
        )
        config = uvicorn.Config(
            self.app,
            host=o.host,
            port=o.port,
            loop="uvloop",
            http=protocol,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=max(1, round(o.keep_alive)),
            limit_concurrency=o.max_connections,
            server_header=False,
        )
        # TLS with the gRPC listener's files; each handshake takes their latest
        # certificate (ServerTls.ssl_context), so a rotation needs no restart.
        ssl_context = None
        if self.settings.tls_cert or self.settings.tls_key or self.settings.tls_client_ca:
            ssl_context = ServerTls(self.settings).ssl_context()
        config.load()
        config.ssl = ssl_context
        sock = _bind(o.host, o.port, self.settings, o.reuse_port)
        self.port = sock.getsockname()[1]
        server = _Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        serving = asyncio.ensure_future(server.serving.wait())
        await asyncio.wait({task, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            serving.cancel()
            sock.close()
            await task  # raises why it stopped
            raise OSError(f"the HTTP server on port {self.port} stopped while starting")
        self._server, self._task = server, task
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop taking connections, let requests in flight finish within `grace` seconds."""
        if self._server is None or self._task is None:
            return
        # uvicorn's timeout is whole seconds; no grace is its forced exit.
        self._server.config.timeout_graceful_shutdown = math.ceil(grace) or None
        self._server.force_exit = grace <= 0
        self._server.should_exit = True
        await self._task
        self._server = None
