"""Task models' own metrics, on the inference server's registry.

A task model (generation, embeddings) may keep its series in a registry of its own,
exposed as `metrics_registry`, without model labels. TaskMetrics merges the loaded
models' registries at scrape time, family by family, adding each sample's model and
version: a model's series come and go with it, and no registry is global.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector


class TaskMetrics(Collector):
    """The loaded task models' own registries, merged family by family, each sample
    labelled with its model and version."""

    def __init__(self, loaded: Callable[[], Sequence[object]]) -> None:
        self._loaded = loaded

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for model in self._loaded():
            registry = getattr(getattr(model, "task", None), "metrics_registry", None)
            if not isinstance(registry, CollectorRegistry):
                continue
            name, version = getattr(model, "name", ""), getattr(model, "version", "")
            labels = {"model": str(name), "version": str(version)}
            for family in registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                into.samples.extend(
                    s._replace(labels={**labels, **s.labels}) for s in family.samples
                )
        yield from merged.values()
