"""The gateway's Prometheus metrics, on a registry made per server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.metrics import LATENCY_BUCKETS, Labeled
from services.gateway.balancer import BackendState, Health

# The front end a request came in by: the `protocol` label, so bounded to these values.
FrontEnd = Literal["grpc", "http"]


class GatewayMetrics:
    """In-flight requests (the autoscaling signal), routing, retries and ejections."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.inflight = Gauge(
            "maas_gateway_inflight_requests",
            "Inference requests being forwarded right now.",
            registry=registry,
        )
        self.routed = Labeled(
            Counter(
                "maas_gateway_routed_requests_total",
                "Inference requests forwarded, by model, resolved version and whether a "
                "traffic split chose the version, and front end (grpc, http).",
                ["model", "version", "canary", "protocol"],
                registry=registry,
            )
        )
        self.requests = Labeled(
            Counter(
                "maas_gateway_requests_total",
                "Inference requests, by model, answering version, status code and front end.",
                ["model", "version", "code", "protocol"],
                registry=registry,
            )
        )
        self.request_seconds = Labeled(
            Histogram(
                "maas_gateway_request_duration_seconds",
                "Inference request latency through the gateway, by model and front end.",
                ["model", "protocol"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self.explanations = Labeled(
            Counter(
                "maas_gateway_explanations_total",
                "Explain calls (maas.explain.v1), by model, answering version, status code "
                "and front end.",
                ["model", "version", "code", "protocol"],
                registry=registry,
            )
        )
        self.evaluations = Labeled(
            Counter(
                "maas_gateway_explain_evaluations_total",
                "Model evaluations the answered explanations spent, by model.",
                ["model"],
                registry=registry,
            )
        )
        self.rate_limited = Labeled(
            Counter(
                "maas_gateway_rate_limited_requests_total",
                "Requests refused because their API key was over its rate, by key id and "
                "front end.",
                ["key", "protocol"],
                registry=registry,
            )
        )
        self.redis_errors = Counter(
            "maas_gateway_rate_limit_redis_errors_total",
            "Calls to the shared rate limiter (Redis) that failed: unreachable, too slow or "
            "an error; the policy (fail-open, fail-closed) decided those requests.",
            registry=registry,
        )
        self.tokens = Labeled(
            Counter(
                "maas_gateway_tokens_total",
                "Tokens in the answers relayed on the OpenAI-compatible routes, by API key id "
                '("" without auth), model and kind (prompt, completion).',
                ["key", "model", "kind"],
                registry=registry,
            )
        )
        self.retries = Counter(
            "maas_gateway_retries_total",
            "Attempts sent to another backend after UNAVAILABLE.",
            registry=registry,
        )
        self.ejections = Counter(
            "maas_gateway_backend_ejections_total",
            "Backends taken out of rotation after a failure.",
            registry=registry,
        )

    def track_backends(
        self, registry: CollectorRegistry, backends: Callable[[], list[BackendState]]
    ) -> None:
        """Report backends by health, read when scraped."""
        registry.register(_BackendCollector(backends))


class _BackendCollector(Collector):
    def __init__(self, backends: Callable[[], list[BackendState]]) -> None:
        self._backends = backends

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "maas_gateway_backends", "Known inference backends, by health.", labels=["health"]
        )
        states = self._backends()
        for health in Health:
            family.add_metric([health.value.lower()], sum(s.health is health for s in states))
        yield family
