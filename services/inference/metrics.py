"""The inference service's Prometheus metrics, on a registry made per server."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Labeled
from services.inference.model import LoadedModel
from services.inference.tasks.metrics import TaskMetrics

_log = logging.getLogger(__name__)


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
        self._nvml = NvmlMemory()

    def collect(self) -> Iterator[Metric]:
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
            yield from self._nvml.collect()


class NvmlMemory:
    """GPU memory in use per device, from NVML (nvidia-ml-py, in the gpu extra).

    NVML is initialised once, on the first scrape that needs it, not on every scrape;
    a device that errors is left out (and counted) instead of failing all of /metrics.
    Devices are labelled by UUID: NVML's index follows PCI order, which need not be
    CUDA's device order (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so `index` is only
    a second label."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None
        self.errors = 0

    def _init(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    import pynvml  # type: ignore[import-not-found]

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as exc:  # noqa: BLE001 - no NVML here (ImportError, NVMLError)
                _log.info("no GPU memory metrics: NVML is not available (%s)", exc)
                self._ready = False
        return self._ready

    def collect(self) -> Iterator[Metric]:
        if not self._init():
            return
        nvml = self._nvml
        used = GaugeMetricFamily(
            "maas_inference_gpu_memory_used_bytes",
            "GPU memory in use, by device UUID (index: NVML's, not CUDA's order).",
            labels=["uuid", "index"],
        )
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001 - NVMLError: report no device this time
            self.errors += 1
            _log.warning("NVML could not count devices: %s", exc)
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # noqa: BLE001 - NVMLError of one device (lost, busy)
                self.errors += 1
                _log.warning("NVML: device %d left out of the metrics: %s", index, exc)
                continue
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            used.add_metric([uuid, str(index)], float(info.used))
        errors = CounterMetricFamily(
            "maas_inference_gpu_metric_errors",
            "NVML errors while reading GPU metrics (a device left out of a scrape).",
            value=self.errors,
        )
        yield used
        yield errors
