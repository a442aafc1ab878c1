"""Prometheus /metrics (and /healthz) over HTTP or HTTPS, from a registry made per server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

_log = logging.getLogger(__name__)

# Latency buckets in seconds, from 100 µs to 30 s.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class MetricsServer:
    """Serves one registry's metrics on host:port (0 picks a free port).

    prometheus_client's own server spends a thread per connection, so idle clients
    grew one service to 210 threads. Here one thread runs an event loop for every
    connection: a client must send its request within `timeout` seconds, gets one
    answer and is closed, and past `max_connections` new ones are closed at once.
    The page itself is prometheus_client's WSGI app (formats, gzip, `name[]`).

    `/healthz` answers 200 while `ready()` says the service serves (its gRPC health
    status, "" SERVING), else 503, and `/readyz` 200 while `api_ready()` says it can
    serve its API (the status of its API service: for the gateway, the registry
    loaded and a backend healthy): Kubernetes probes them over HTTPS, for liveness and
    readiness, when the gRPC port needs a client certificate. They name no model, so this port never
    tells anyone which models are loaded. With `tls_cert` and `tls_key` the listener is
    HTTPS; the files are read again when they change (a rotated Secret), checked per
    connection, so a new certificate needs no restart.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        timeout: float = 5.0,
        max_connections: int = 256,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        ready: Callable[[], bool] | None = None,
        api_ready: Callable[[], bool] | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("metrics TLS needs both tls_cert and tls_key")
        self.registry = registry
        self._ready = ready or (lambda: True)
        self._checks = {"/healthz": self._ready, "/readyz": api_ready or self._ready}
        self._tls = _TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
        self._host = host.strip("[]") or "::"
        self._requested = port
        self._timeout = timeout
        self._max_connections = max_connections
        self._app = make_wsgi_app(registry)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._connections = 0
        self._serving = False
        self.port = 0

    def start(self) -> int:
        """Bind, start serving in a background thread and return the bound port."""
        if self._tls is not None:
            self._tls.context()  # unreadable or mismatched files fail here, not per scrape
        sock = _listen(self._host, self._requested)
        self.port = int(sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name="metrics", daemon=True
        )
        self._thread.start()
        ready.wait()
        if not self._serving:  # it failed before serving, and logged why
            self._loop = self._thread = self._stopped = None
            raise OSError(f"metrics server on port {self.port} did not start")
        _log.info("metrics on port %d", self.port, extra={"metrics_port": self.port})
        return self.port

    def stop(self) -> None:
        """Stop serving: the port is closed and open connections end."""
        if self._loop is None or self._thread is None or self._stopped is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()
        self._loop = self._thread = self._stopped = None
        self._serving = False

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(sock, ready))
        except Exception:
            _log.exception("metrics server failed")
        finally:
            sock.close()
            self._loop.close()
            ready.set()  # start() waits for this even when serving never began

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        assert self._stopped is not None
        tasks: set[asyncio.Task[None]] = set()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._answer(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(connected, sock=sock, limit=_HEAD_LIMIT)
        self._serving = True
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, then close; a client too slow to send it is dropped."""
        self._connections += 1
        try:
            if self._connections > self._max_connections:
                return
            if self._tls is not None:
                try:
                    await writer.start_tls(self._tls.context(), ssl_handshake_timeout=self._timeout)
                except (ssl.SSLError, ConnectionError, TimeoutError):
                    return  # a plaintext client or a failed handshake: nothing to answer
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            writer.write(self._respond(head))
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            self._connections -= 1
            writer.close()

    def _respond(self, head: bytes) -> bytes:
        """The HTTP/1.0 response to a request head, from prometheus_client's WSGI app."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _response("400 Bad Request", [], b"expected 'GET /metrics HTTP/1.1'\n")
        method, target, _ = parts
        path, _, query = target.partition("?")
        check = self._checks.get(path)
        if check is not None:
            if check():
                return _response("200 OK", [("Content-Type", "text/plain")], b"ok\n")
            return _response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], b"not serving\n"
            )
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() in ("accept", "accept-encoding"):
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        status: list[str] = []
        headers: list[tuple[str, str]] = []

        def start_response(code: str, names: list[tuple[str, str]]) -> None:
            status.append(code)
            headers.extend(names)

        body = b"".join(self._app(environ, start_response))
        return _response(status[0], headers, body)


class _TlsFiles:
    """A server SSLContext from a certificate and key file, rebuilt when either changes."""

    def __init__(self, cert: str, key: str) -> None:
        self._cert = cert
        self._key = key
        self._stamp: tuple[int, int] | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """The current context; a file that cannot be read keeps the last good one."""
        try:
            stamp = (os.stat(self._cert).st_mtime_ns, os.stat(self._key).st_mtime_ns)
            if self._context is None or stamp != self._stamp:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self._cert, self._key)
                self._context, self._stamp = context, stamp
        except (OSError, ssl.SSLError):
            if self._context is None:
                raise
            _log.warning("metrics TLS files unreadable; keeping the previous certificate")
        return self._context


# The request line and headers of a scrape are well under this.
_HEAD_LIMIT = 16 * 1024


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, dual-stack for `::`; OSError (EADDRINUSE) if taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


M = TypeVar("M", Counter, Histogram)


class Labeled(Generic[M]):
    """A labelled metric whose children are looked up once per label values.

    prometheus_client's `labels()` costs microseconds per call, on every request.
    Label values must be bounded (known models and versions, status codes, method
    names), never raw client input; past `limit` children nothing more is cached.
    """

    def __init__(self, metric: M, limit: int = 10_000) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}
        self._limit = limit

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self.metric.labels(*values)
            if len(self._children) < self._limit:
                self._children[values] = child
        return child


class RpcMetrics:
    """Requests and latency per gRPC method and status code, for any service."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.requests = Labeled(
            Counter(
                f"maas_{service}_grpc_requests_total",
                "gRPC calls handled, by method and code.",
                ["method", "code"],
                registry=registry,
            )
        )
        self.latency = Labeled(
            Histogram(
                f"maas_{service}_grpc_request_duration_seconds",
                "gRPC call latency, by method.",
                ["method"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
