"""Windows over the probe and the sampler: what a category, or one case of it, cost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tools.hostile.probe import Sampler, StallProbe
from tools.hostile.report import Category
from tools.hostile.system import HostileSystem


@dataclass(eq=False)  # open spans are told apart by identity
class Span:
    """The longest probe latency and the RSS growth seen while it was open."""

    stall_ms: dict[str, float] = field(default_factory=dict)
    probe_errors: dict[str, int] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)

    def growth_mb(self) -> dict[str, float]:
        return dict(self.rss_mb)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class Meter:
    """The stall probe and the RSS sampler of one system."""

    def __init__(self, system: HostileSystem) -> None:
        self._logs = {name: system.processes[name].log_path for name in system.services}
        self.sampler = Sampler({name: system.pid(name) for name in system.services})
        self.probe = StallProbe({name: system.address(name) for name in system.services})
        self._open: list[Span] = []

    def _fold(self, fence: float = 0.0) -> None:
        figures = self.probe.collect(fence)
        for span in self._open:
            for name, ms in figures["stall_ms"].items():
                span.stall_ms[name] = max(span.stall_ms.get(name, 0.0), ms)
            for name, count in figures["errors"].items():
                span.probe_errors[name] = span.probe_errors.get(name, 0) + count

    @contextmanager
    def case(self, alone: bool = False) -> Iterator[Span]:
        """A span over the block and what it left running (until every service answers
        a probe again); figures are filled in when it ends. `alone`: its stalls count
        for it only, not for the spans around it (a well-formed reference request,
        which the goals do not judge)."""
        self._fold()
        span = Span()
        outer = self._open
        self._open = [span] if alone else [*outer, span]
        try:
            with self.sampler.window() as window:
                try:
                    yield span
                finally:
                    self._fold(fence=time.monotonic())
        finally:
            self._open = outer
        span.rss_mb = window.growth_mb()
        span.threads = window.thread_growth()

    @contextmanager
    def category(self, category: Category) -> Iterator[Span]:
        """A span over a whole category, written into it."""
        start = time.monotonic()
        offsets = {name: _size(path) for name, path in self._logs.items()}
        with self.case() as span:
            yield span
        lines, tracebacks = {}, {}
        for name, path in self._logs.items():
            with path.open("rb") as log:
                log.seek(offsets[name])
                added = log.read().decode(errors="replace")
            lines[name] = added.count("\n")
            tracebacks[name] = added.count("Traceback (most recent call last)")
        # Item 11: a client's bad request is one rate-limited log line, not a traceback.
        category.figures["log_lines"] = lines
        category.figures["log_tracebacks"] = tracebacks
        category.stall_ms = span.stall_ms
        category.probe_errors = span.probe_errors
        category.rss_growth_mb = {k: round(v, 1) for k, v in span.rss_mb.items()}
        category.seconds = round(time.monotonic() - start, 1)
        category.figures.setdefault("peak_thread_growth", span.threads)

    def close(self) -> None:
        self.probe.close()
        self.sampler.close()
