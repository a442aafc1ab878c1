"""Throughput and p99 latency against concurrency, one row per model, targets side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tools.bench.stats import Series


def plot(series: Sequence[Series], path: Path, title: str = "") -> Path:
    """Write a PNG (matplotlib, Agg backend) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(s.model for s in series)) or ["(none)"]
    fig, axes = plt.subplots(
        len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False, constrained_layout=True
    )
    for row, model in zip(axes, models, strict=True):
        throughput, p99 = row
        for s in (s for s in series if s.model == model and s.levels):
            xs = [lv.concurrency for lv in s.levels]
            style = "--" if s.target in ("ort", "perf_analyzer") else "-"
            throughput.plot(
                xs, [lv.throughput for lv in s.levels], style, marker="o", label=s.label
            )
            p99.plot(
                xs, [lv.latency_ms["p99"] for lv in s.levels], style, marker="o", label=s.label
            )
        throughput.set_title(f"{model}: throughput")
        throughput.set_ylabel("requests / s")
        throughput.set_yscale("log")  # in-process ORT is orders of magnitude above
        p99.set_title(f"{model}: p99 latency")
        p99.set_ylabel("ms")
        p99.set_yscale("log")
        for ax in row:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (requests in flight)")
            ax.grid(True, which="both", alpha=0.3)
        throughput.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
