"""The inference service's Prometheus metrics, on a registry made per server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Labeled
from services.inference.model import LoadedModel
from services.inference.tasks.metrics import TaskMetrics


class InferenceMetrics:
    """Requests, latencies, batch sizes, loads; in-flight and queue depth per model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        mv = ["model", "version"]
        self.requests = Labeled(
            Counter(
                "maas_inference_requests_total",
                "Inference requests, by model, version and code.",
                [*mv, "code"],
                registry=registry,
            )
        )
        self.request_seconds = Labeled(
            Histogram(
                "maas_inference_request_duration_seconds",
                "Request latency inside the service.",
                mv,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self.queue_seconds = Labeled(
            Histogram(
                "maas_inference_queue_duration_seconds",
                "Time requests waited in the queue.",
                mv,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self.compute_seconds = Labeled(
            Histogram(
                "maas_inference_compute_duration_seconds",
                "ONNX Runtime time per execution.",
                mv,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self.batch_size = Labeled(
            Histogram(
                "maas_inference_batch_size",
                "Rows per execution (after dynamic batching).",
                mv,
                buckets=BATCH_BUCKETS,
                registry=registry,
            )
        )
        self.load_seconds = Histogram(
            "maas_inference_model_load_duration_seconds",
            "Model load and warm-up time.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.load_failures = Counter(
            "maas_inference_model_load_failures_total",
            "Model versions that failed to load.",
            ["model"],
            registry=registry,
        )

    def track(self, registry: CollectorRegistry, loaded: Callable[[], list[LoadedModel]]) -> None:
        """Report in-flight requests and queue depth of the loaded models at scrape time,
        and the task models' own series (generation: tokens, cache use)."""
        registry.register(_LiveCollector(loaded))
        registry.register(TaskMetrics(loaded))

    def execution(self, model: LoadedModel, rows: int, infer_ns: int) -> None:
        """One ONNX Runtime execution of `rows` rows."""
        labels = (model.name, str(model.version))
        self.batch_size(*labels).observe(rows)
        self.compute_seconds(*labels).observe(infer_ns / 1e9)


class _LiveCollector(Collector):
    def __init__(self, loaded: Callable[[], list[LoadedModel]]) -> None:
        self._loaded = loaded

    def collect(self) -> Iterator[GaugeMetricFamily]:
        inflight = GaugeMetricFamily(
            "maas_inference_inflight_requests",
            "Requests being served now, per model.",
            labels=["model", "version"],
        )
        depth = GaugeMetricFamily(
            "maas_inference_queue_depth",
            "Requests waiting in the queue, per model.",
            labels=["model", "version"],
        )
        gpu = False
        for model in self._loaded():
            labels = [model.name, str(model.version)]
            inflight.add_metric(labels, model.inflight)
            depth.add_metric(labels, model.depth)
            gpu = gpu or model.provider != "CPUExecutionProvider"
        yield inflight
        yield depth
        if gpu:
            yield from _gpu_memory()


def _gpu_memory() -> Iterator[GaugeMetricFamily]:
    """Device memory in use, where NVML (nvidia-ml-py, in the gpu extra) is present."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML here: no GPU metric
        return
    used = GaugeMetricFamily(
        "maas_inference_gpu_memory_used_bytes", "GPU memory in use.", labels=["device"]
    )
    for index in range(pynvml.nvmlDeviceGetCount()):
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        used.add_metric([str(index)], float(info.used))
    yield used
