"""The merge of worker pages: counters and histograms summed, readiness the minimum,
other gauges one series per worker, `_created` the earliest."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from services.common.workers_metrics import ReadyModels, grpc_requests, merge


def page(calls: int, latency: float, inflight: int, ready: bool) -> list[Metric]:
    """One worker's page as the supervisor reads it (text, parsed)."""
    registry = CollectorRegistry()
    counter = Counter("maas_x_grpc_requests_total", "calls", ["code"], registry=registry)
    counter.labels("OK").inc(calls)
    Histogram("maas_x_seconds", "latency", registry=registry, buckets=(1.0,)).observe(latency)
    Gauge("maas_x_inflight", "in flight", registry=registry).set(inflight)
    registry.register(ReadyModels(lambda: [("m", ready), ("n", True)]))
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def values(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_counters_and_histograms_are_summed_and_readiness_is_every_workers() -> None:
    first, second = page(3, 0.5, 2, True), page(4, 2.0, 5, False)
    merged = values(merge([(0, first), (1, second)]))
    assert merged[("maas_x_grpc_requests_total", (("code", "OK"),))] == 7
    assert merged[("maas_x_seconds_count", ())] == 2
    assert merged[("maas_x_seconds_sum", ())] == 2.5
    assert merged[("maas_x_seconds_bucket", (("le", "1.0"),))] == 1
    assert merged[("maas_x_seconds_bucket", (("le", "+Inf"),))] == 2
    # Ready only where ready on both.
    assert merged[("maas_model_ready", (("model", "m"),))] == 0
    assert merged[("maas_model_ready", (("model", "n"),))] == 1
    # A plain gauge: one series per worker, nothing summed.
    assert merged[("maas_x_inflight", (("worker", "0"),))] == 2
    assert merged[("maas_x_inflight", (("worker", "1"),))] == 5
    created = [v for (name, _), v in merged.items() if name == "maas_x_grpc_requests_created"]
    assert len(created) == 1
    assert grpc_requests(first) == 3 and grpc_requests(second) == 4


def test_the_merged_page_is_valid_exposition() -> None:
    merged = merge([(0, page(1, 0.1, 0, True)), (1, page(2, 0.1, 1, True))])

    class Fixed:
        def collect(self) -> list[Metric]:
            return merged

    registry = CollectorRegistry()
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    again = values(list(text_string_to_metric_families(text)))
    assert again[("maas_x_grpc_requests_total", (("code", "OK"),))] == 3


def test_no_worker_answering_gives_an_empty_merge() -> None:
    assert merge([]) == []
