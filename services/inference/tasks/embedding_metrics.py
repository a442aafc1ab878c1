"""Embedding metrics: texts and tokens embedded (tokens per API key id), texts per run.

Each embedding model keeps its series in a registry of its own, without model labels,
exposed as the backend's `metrics_registry`; services.inference.tasks.metrics merges
the loaded models' registries into the server's at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.inference.tasks.key_labels import KeyLabels

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class EmbeddingMetrics:
    """One embedding model's series; the runner reports to it from the batcher's thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The label for an API key id (bounded per model).
        self.key = KeyLabels()
        self.texts = Counter(
            "maas_embedding_texts",
            "Texts embedded (rate() is texts per second).",
            registry=self.registry,
        )
        self.input_tokens = Counter(
            "maas_embedding_input_tokens",
            "Tokens embedded, after truncation, per API key id.",
            ["key"],
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "maas_embedding_batch_texts",
            "Texts per run of the model (requests merged by the batcher).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def embedded(self, key_id: str, texts: int, tokens: int) -> None:
        """One request's texts, embedded."""
        self.texts.inc(texts)
        self.input_tokens.labels(self.key(key_id)).inc(tokens)
