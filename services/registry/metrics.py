"""The registry's Prometheus metrics: uploads, bytes, blobs collected, watch subscribers."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class RegistryMetrics:
    """Created per server on its own registry, never global."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uploads = Counter(
            "maas_registry_uploads_total",
            "Version uploads, by result (ok, rejected, failed).",
            ["result"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "maas_registry_upload_bytes_total", "Bytes of accepted uploads.", registry=registry
        )
        self.blobs_collected = Counter(
            "maas_registry_gc_blobs_collected_total",
            "Blobs without a version removed by the garbage collector.",
            registry=registry,
        )
        self.watch_subscribers = Gauge(
            "maas_registry_watch_subscribers", "Watch streams connected now.", registry=registry
        )

    def track_subscribers(self, count: Callable[[], int]) -> None:
        """Read the subscriber count at scrape time."""
        self.watch_subscribers.set_function(count)
