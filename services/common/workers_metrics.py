"""One /metrics for N workers: the supervisor scrapes each worker's private page and merges.

prometheus-client's multiprocess mode was the other way. It was not chosen because
it cannot carry the collectors computed at scrape time (in-flight and queue depth per
loaded model, backend states, GPU memory) and it chooses its value class from the
environment at import. Scraping each worker's ordinary page, on a loopback port of its
own, keeps every metric as it is, and the merge rules fit in a table:

- counters, histograms and summaries are summed sample by sample, so each request is
  counted once whichever worker served it; `_created` takes the earliest;
- `maas_model_ready` takes the minimum: a model is ready on the service only when it
  is ready on every live worker;
- every other gauge keeps one series per worker, labelled `worker`, since a sum of
  in-flight counts means something and a sum of, say, a backend's state does not.

A worker that does not answer a scrape (it is restarting) is left out of that scrape;
its counters then go down, which Prometheus' `rate()` reads as a counter reset.
"""

from __future__ import annotations

import logging
import re
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

_log = logging.getLogger(__name__)
SUMMED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
READY = "maas_model_ready"
_GRPC_REQUESTS = re.compile(r"maas_\w+_grpc_requests_total")
SCRAPE_TIMEOUT = 5.0


@dataclass(frozen=True)
class WorkerStatus:
    """What the supervisor knows of one worker when /metrics is asked for."""

    index: int
    pid: int
    metrics_port: int
    serving: bool
    restarts: int


Page = tuple[int, list[Metric]]
_Key = tuple[str, tuple[tuple[str, str], ...]]


def merge(pages: Iterable[Page]) -> list[Metric]:
    """The families of every worker's page merged by the rules above."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_Key, float]] = {}
    for index, page in pages:
        for family in page:
            out = families.get(family.name)
            if out is None:
                out = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            combine = _combiner(family)
            for sample in family.samples:
                if combine is None:
                    out.add_sample(
                        sample.name, {**sample.labels, "worker": str(index)}, sample.value
                    )
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = values[family.name]
                seen[key] = sample.value if key not in seen else combine(seen[key], sample.value)
    for name, seen in values.items():
        for (sample_name, labels), value in seen.items():
            families[name].add_sample(sample_name, dict(labels), value)
    return list(families.values())


def _combiner(family: Metric) -> Callable[[float, float], float] | None:
    """How one family's samples from two workers combine; None: one series per worker."""
    if family.type in SUMMED:
        return lambda a, b: a + b
    # The text parser reads a counter's `_created` as a gauge family of its own.
    if family.name == READY or family.name.endswith("_created"):
        return min
    return None


def grpc_requests(page: list[Metric]) -> float:
    """The gRPC calls one worker has answered (its maas_<service>_grpc_requests_total)."""
    return sum(
        s.value
        for family in page
        for s in family.samples
        if family.type == "counter" and _GRPC_REQUESTS.fullmatch(s.name)
    )


def scrape(port: int) -> list[Metric]:
    """One worker's page, from its loopback metrics port; OSError if it does not answer."""
    with urllib.request.urlopen(  # noqa: S310 -- a fixed http://127.0.0.1 URL
        f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT
    ) as response:
        text = response.read().decode()
    return list(text_string_to_metric_families(text))


def answers_ready(port: int) -> bool:
    """Whether one worker's loopback /readyz says it can serve its API."""
    try:
        with urllib.request.urlopen(  # noqa: S310 -- a fixed http://127.0.0.1 URL
            f"http://127.0.0.1:{port}/readyz", timeout=SCRAPE_TIMEOUT
        ) as response:
            return bool(response.status == 200)
    except OSError:  # 503 (an HTTPError) or no answer: not ready
        return False


class MergedMetrics(Collector):
    """The supervisor's /metrics: its workers' pages merged, and the workers themselves."""

    def __init__(self, workers: Callable[[], list[WorkerStatus]], configured: int) -> None:
        self._workers = workers
        self._configured = configured

    def collect(self) -> Iterator[Metric]:
        statuses = self._workers()
        pages: list[Page] = []
        answered: dict[int, float] = {}
        for status in statuses:
            if not status.serving:
                continue
            try:
                page = scrape(status.metrics_port)
            except (OSError, ValueError) as exc:
                _log.info("worker %d did not answer a scrape: %s", status.index, exc)
                continue
            pages.append((status.index, page))
            answered[status.index] = grpc_requests(page)
        yield from merge(pages)
        yield from self._own(statuses, answered)

    def _own(self, statuses: list[WorkerStatus], answered: dict[int, float]) -> Iterator[Metric]:
        workers = GaugeMetricFamily("maas_workers", "Worker processes configured (--workers).")
        workers.add_metric([], self._configured)
        up = GaugeMetricFamily(
            "maas_worker_up", "1 while the worker serves and answers scrapes.", labels=["worker"]
        )
        pid = GaugeMetricFamily("maas_worker_pid", "The worker's process id.", labels=["worker"])
        restarts = CounterMetricFamily(
            "maas_worker_restarts", "Times the worker was started again.", labels=["worker"]
        )
        calls = CounterMetricFamily(
            "maas_worker_grpc_requests",
            "gRPC calls the worker answered (how connections spread over the workers).",
            labels=["worker"],
        )
        for status in statuses:
            label = [str(status.index)]
            up.add_metric(label, 1 if status.index in answered else 0)
            pid.add_metric(label, status.pid)
            restarts.add_metric(label, status.restarts)
            if status.index in answered:
                calls.add_metric(label, answered[status.index])
        yield from (workers, up, pid, restarts, calls)


class ReadyModels(Collector):
    """A worker's `maas_model_ready{model}`: 1 when the model is ready on this worker."""

    def __init__(self, models: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            READY,
            "1 when the model is ready (merged by the supervisor: ready on every worker).",
            labels=["model"],
        )
        for name, is_ready in self._models():
            ready.add_metric([name], 1 if is_ready else 0)
        yield ready
