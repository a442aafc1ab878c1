"""Per-model-version counters in the shape of Triton's ModelStatistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Duration:
    """A count and a total in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Record `count` events that took `ns` in total."""
        self.count += count
        self.ns += ns


@dataclass(frozen=True)
class Totals:
    """A Duration at one moment."""

    count: int
    ns: int


def _totals(d: Duration) -> Totals:
    return Totals(d.count, d.ns)


@dataclass(frozen=True)
class BatchTotals:
    """A batch size's executions at one moment."""

    batch_size: int
    compute_input: Totals
    compute_infer: Totals
    compute_output: Totals


@dataclass(frozen=True)
class StatsSnapshot:
    """One model version's statistics at one moment, as ModelStatistics reports them."""

    name: str
    version: str
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Totals
    fail: Totals
    queue: Totals
    compute_input: Totals
    compute_infer: Totals
    compute_output: Totals
    batches: tuple[BatchTotals, ...]


@dataclass
class BatchStats:
    """Executions of one batch size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Counts and durations for one model version; updated on the event loop only."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)
    # Told of each execution: (rows, ONNX Runtime nanoseconds).
    listener: Callable[[int, int], None] | None = None

    def record_execution(
        self, batch_size: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution that carried `requests` requests of `batch_size` rows."""
        self.execution_count += 1
        self.inference_count += batch_size
        per = self.batches.setdefault(batch_size, BatchStats())
        per.compute_input.add(input_ns)
        per.compute_infer.add(infer_ns)
        per.compute_output.add(output_ns)
        # Triton counts compute per request: each request is charged the whole run.
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        if self.listener is not None:
            self.listener(batch_size, infer_ns)

    def record_request(self, ok: bool, total_ns: int, queue_ns: int | None) -> None:
        """One request finished; queue_ns is None when it never reached the queue."""
        (self.success if ok else self.fail).add(total_ns)
        if queue_ns is not None:
            self.queue.add(queue_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def snapshot(self, name: str, version: str) -> StatsSnapshot:
        """A copy that later requests do not change."""
        return StatsSnapshot(
            name,
            version,
            self.last_inference_ms,
            self.inference_count,
            self.execution_count,
            _totals(self.success),
            _totals(self.fail),
            _totals(self.queue),
            _totals(self.compute_input),
            _totals(self.compute_infer),
            _totals(self.compute_output),
            tuple(
                BatchTotals(
                    size,
                    _totals(b.compute_input),
                    _totals(b.compute_infer),
                    _totals(b.compute_output),
                )
                for size, b in sorted(self.batches.items())
            ),
        )
