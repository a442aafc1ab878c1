"""MetricsServer: prometheus_client's page on one thread's event loop, bound like before."""

from __future__ import annotations

import errno
import gzip
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.common.metrics import MetricsServer


@pytest.fixture
def served() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("one_total", "First.", registry=registry).inc()
    Counter("two_total", "Second.", registry=registry).inc(2)
    metrics = MetricsServer(registry, "[::]", 0)
    metrics.start()
    yield metrics
    metrics.stop()


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_over_ipv4_and_ipv6(served: MetricsServer) -> None:
    for host in ("127.0.0.1", "[::1]"):
        status, headers, body = get(f"http://{host}:{served.port}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert b"one_total 1.0" in body and b"two_total 2.0" in body


def test_gzip_openmetrics_and_names_as_prometheus_client_serves_them(
    served: MetricsServer,
) -> None:
    base = f"http://127.0.0.1:{served.port}/metrics"
    _, headers, body = get(base, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and b"one_total" in gzip.decompress(body)
    _, headers, body = get(base, Accept="application/openmetrics-text; version=1.0.0")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    _, _, body = get(base + "?name[]=two_total")
    assert b"two_total 2.0" in body and b"one_total" not in body


def test_other_methods_and_bad_requests(served: MetricsServer) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{served.port}/metrics", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"nonsense\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 400 Bad Request")


def test_a_taken_port_raises_eaddrinuse_and_stop_frees_the_port(served: MetricsServer) -> None:
    other = MetricsServer(CollectorRegistry(), "::", served.port)
    with pytest.raises(OSError) as caught:
        other.start()
    assert caught.value.errno == errno.EADDRINUSE
    port = served.port
    served.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    served.stop()  # a second stop does nothing
