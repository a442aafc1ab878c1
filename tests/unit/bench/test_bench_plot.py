"""The plot and the results files are written where asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.bench.plot import plot
from tools.bench.run import write
from tools.bench.stats import Level, Series, results_document, validate

pytest.importorskip("matplotlib")


def series() -> list[Series]:
    lat = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.2}
    levels = [Level(c, 10, 0, 1.0, 100.0 * c, 100.0 * c, lat) for c in (1, 4, 16)]
    return [
        Series("inference", "inference", "digits", levels=levels),
        Series("ORT", "ort", "digits", levels=levels),
        Series("inference", "inference", "encoder", levels=levels[:2]),
    ]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot(series(), tmp_path / "sub" / "plot.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_puts_json_and_png_side_by_side(tmp_path: Path) -> None:
    document = results_document(series(), {"cpus": 2}, {"seconds": 1.0})
    json_path, png_path = write(document, tmp_path, "2026-01-01")
    assert json_path.name == "2026-01-01.json" and png_path.name == "2026-01-01.png"
    assert validate(json.loads(json_path.read_text())) == []
    assert png_path.stat().st_size > 1000
