"""GPU memory metrics from NVML: initialised once, one device's error leaves only that
device out, devices labelled by UUID (NVML's index is not CUDA's order)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from services.inference.metrics import NvmlMemory


class NVMLError(Exception):
    """pynvml's error type, as the real module raises it."""


class FakeNvml:
    """The part of pynvml the collector uses: three devices, the second one lost."""

    def __init__(self) -> None:
        self.inits = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.inits += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 3

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if index == 1:
            raise NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:  # noqa: N802
        return f"GPU-{handle:04d}".encode()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=1000 * (handle + 1))


class Registered(Collector):
    def __init__(self, nvml: NvmlMemory) -> None:
        self.nvml = nvml

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.nvml.collect()


def test_nvml_once_per_device_errors_and_uuid_labels() -> None:
    fake = FakeNvml()
    registry = CollectorRegistry()
    registry.register(Registered(NvmlMemory(fake)))
    first = generate_latest(registry).decode()
    second = generate_latest(registry).decode()
    assert fake.inits == 1
    assert 'maas_inference_gpu_memory_used_bytes{index="0",uuid="GPU-0000"} 1000.0' in second
    assert 'maas_inference_gpu_memory_used_bytes{index="2",uuid="GPU-0002"} 3000.0' in second
    assert 'index="1"' not in first
    assert "maas_inference_gpu_metric_errors_total 2.0" in second  # one per scrape


def test_no_nvml_means_no_gpu_series() -> None:
    class Broken(FakeNvml):
        def nvmlInit(self) -> None:  # noqa: N802
            self.inits += 1
            raise NVMLError("NVML Shared Library Not Found")

    broken = Broken()
    nvml = NvmlMemory(broken)
    assert list(nvml.collect()) == [] and list(nvml.collect()) == []
    assert broken.inits == 1
