"""Generation metrics: time to first token, time per output token, token counts per
model and API key, cache use and queue depth.

Each generate model keeps its series in a registry of its own, without model labels;
services.inference.tasks.metrics merges those of the loaded models into the server's
registry at scrape time, so a model's series leave with it and none is global.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.metrics import LATENCY_BUCKETS
from services.inference.tasks.generate.engine import Engine, Job, Observer
from services.inference.tasks.key_labels import KeyLabels


class GenerationMetrics(Observer):
    """One generate model's series; the engine reports to it from its thread."""

    def __init__(self) -> None:
        # Series without model and version labels: TaskMetrics adds them.
        self.registry = CollectorRegistry(auto_describe=True)
        # The label for an API key id (bounded per model).
        self.key = KeyLabels()
        self.ttft = Histogram(
            "maas_generate_time_to_first_token_seconds",
            "From the request's arrival to its first output token (queue and prefill).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "maas_generate_time_per_output_token_seconds",
            "Mean time between a request's output tokens after the first.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.output_tokens = Counter(
            "maas_generate_output_tokens",
            "Output tokens made (rate() is tokens per second).",
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "maas_generate_prompt_tokens",
            "Prompt tokens prefilled, per API key id.",
            ["key"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "maas_generate_completion_tokens",
            "Output tokens made, per API key id.",
            ["key"],
            registry=self.registry,
        )

    def watch(self, engine: Engine) -> None:
        """Report the engine's cache and queue at scrape time."""
        self.registry.register(_EngineCollector(engine))

    def admitted(self, job: Job) -> None:
        self.prompt_tokens.labels(job.key).inc(len(job.prompt))

    def tokens(self, jobs: list[Job]) -> None:
        self.output_tokens.inc(len(jobs))
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.key] = counts.get(job.key, 0) + 1
            if job.generated == 1:
                self.ttft.observe(job.first_token - job.submitted)
        for key, count in counts.items():
            self.completion_tokens.labels(key).inc(count)

    def finished(self, job: Job) -> None:
        if job.generated > 1 and job.first_token:
            self.tpot.observe((time.perf_counter() - job.first_token) / (job.generated - 1))


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        for name, doc, value in (
            (
                "maas_generate_cache_reserved_tokens",
                "KV cache tokens reserved (prompt plus max_tokens of running sequences).",
                engine.reserved,
            ),
            (
                "maas_generate_cache_used_tokens",
                "KV cache tokens written by running sequences.",
                engine.in_use,
            ),
            (
                "maas_generate_cache_capacity_tokens",
                "The KV cache budget in tokens.",
                engine.cache_tokens,
            ),
            (
                "maas_generate_running_sequences",
                "Sequences admitted: decoding, or their prompt being prefilled.",
                engine.running,
            ),
            ("maas_generate_queue_depth", "Requests waiting for a slot or cache.", engine.depth),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))
