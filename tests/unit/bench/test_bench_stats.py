"""The benchmark's pure parts: percentiles, level summaries, the results JSON, the checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tools.bench.loadgen import split
from tools.bench.perf_analyzer import parse_csv
from tools.bench.stats import (
    SCHEMA,
    Level,
    Series,
    percentile,
    results_document,
    series_from_document,
    summarize,
    validate,
)
from tools.bench.summary import checks, markdown


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = list(np.random.default_rng(0).exponential(1.0, 1001))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5


def test_summarize_turns_seconds_into_rates_and_milliseconds() -> None:
    level = summarize(8, [0.001] * 90 + [0.010] * 10, 2.0, rows_per_request=4, errors=1)
    assert level.requests == 100 and level.throughput == 50.0 and level.rows_per_second == 200.0
    assert level.latency_ms["p50"] == pytest.approx(1.0)
    assert level.latency_ms["p99"] == pytest.approx(10.0)
    assert level.latency_ms["mean"] == pytest.approx(1.9)
    assert level.errors == 1 and level.concurrency == 8


def test_load_is_split_evenly_across_processes() -> None:
    assert split(64, 2) == [32, 32]
    assert split(5, 2) == [3, 2]
    assert split(1, 4) == [1]


def level(c: int, rate: float, p50: float = 1.0, batch: float | None = None) -> Level:
    lat = {"p50": p50, "p90": p50 * 1.5, "p99": p50 * 2, "mean": p50}
    return Level(c, 100, 0, 1.0, rate, rate, lat, effective_batch=batch)


def sample_series() -> list[Series]:
    return [
        Series(
            "inference (on)",
            "inference",
            "digits",
            batching=True,
            levels=[level(1, 1000, 0.9), level(16, 3000), level(32, 3300, batch=8)],
        ),
        Series(
            "inference (off)",
            "inference",
            "digits",
            batching=False,
            levels=[level(1, 1000), level(32, 1000)],
        ),
        Series(
            "gateway",
            "gateway",
            "digits",
            batching=True,
            levels=[level(1, 600, 1.5), level(16, 2000), level(32, 2500)],
        ),
        Series("ORT", "ort", "digits", levels=[level(1, 9000), level(32, 20000)]),
        Series("kserve", "kserve", "digits", levels=[level(1, 900), level(16, 1000)]),
        Series("pytriton", "pytriton", "digits", levels=[level(1, 500), level(16, 3500)]),
    ]


def test_results_document_round_trips_through_json() -> None:
    series = sample_series()
    document = results_document(series, {"cpus": 2}, {"seconds": 1.0}, notes=["x"])
    assert validate(document) == []
    again = json.loads(json.dumps(document))
    assert again["schema"] == SCHEMA
    assert series_from_document(again) == series


def test_validate_names_what_is_missing() -> None:
    document = results_document(sample_series(), {}, {})
    del document["series"][0]["levels"][0]["latency_ms"]
    document["schema"] = "other"
    problems = validate(document)
    assert any("schema" in p for p in problems)
    assert any("series 0 level 0" in p and "latency_ms" in p for p in problems)


def test_checks_compute_the_four_targets() -> None:
    found = {c.name: c for c in checks(sample_series())}
    on_off = found["batching on/off, digits, c=32, inference"]  # no gateway off series
    assert on_off.value == 3.3 and on_off.met
    assert found["gateway vs in-process ORT, digits"].value == 0.125
    added = found["gateway p50 - direct p50, digits, c=1 (ms)"]
    assert added.value == pytest.approx(0.6) and added.met
    assert "inference vs kserve, digits, c=16" not in found  # goal 1 judges KServe
    assert found["inference vs pytriton, digits, c=1"].met
    assert not found["inference vs pytriton, digits, c=16"].met
    table = markdown(sample_series(), list(found.values()))
    assert "| digits | gateway | 32 | 2500.0 |" in table and "**no**" in table


def test_perf_analyzer_csv_is_read_in_milliseconds() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,p50 latency,p90 latency,p95 latency,"
        "p99 latency,Avg latency\n16,2345.6,10,6000,8000,9000,12000,6500\n"
    )
    (lv,) = parse_csv(text)
    assert lv.concurrency == 16 and lv.throughput == 2345.6
    assert lv.latency_ms == {"p50": 6.0, "p90": 8.0, "p99": 12.0, "mean": 6.5}


def test_perf_analyzer_command_speaks_tls_only_with_a_root_ca(tmp_path: Path) -> None:
    from tools.bench.perf_analyzer import command

    exe, out = tmp_path / "perf_analyzer", tmp_path / "out.csv"
    plain = command(exe, "localhost:1", "digits", 4, out, 1000)
    assert not any(arg.startswith("--ssl") for arg in plain)
    ca = tmp_path / "ca.pem"
    tls = command(exe, "localhost:1", "digits", 4, out, 1000, root_ca=ca)
    assert tls[: len(plain)] == plain
    assert tls[len(plain) :] == [
        "--ssl-grpc-use-ssl",
        "true",
        "--ssl-grpc-root-certifications-file",
        str(ca),
    ]
