"""Prometheus /metrics over HTTP, from a registry made per server, never global."""

from __future__ import annotations

import logging
import threading
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

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
    """Serves one registry's metrics on host:port (0 picks a free port)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self._host = host.strip("[]") or "::"
        self._requested = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Start serving in a background thread; returns the bound port."""
        self._server, self._thread = start_http_server(
            self._requested, addr=self._host, registry=self.registry
        )
        self.port = int(self._server.server_port)
        _log.info("metrics on port %d", self.port, extra={"metrics_port": self.port})
        return self.port

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


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
