"""The generation bench's arithmetic: tokens counted by arrival inside the window,
TTFT of the requests started in it, time per output token after the first."""

from __future__ import annotations

from tools.bench.generation import ratios
from tools.bench.textload import Record, summarize


def test_tokens_are_counted_inside_the_window_only() -> None:
    # Window [10, 20): one request straddles its start, one its end, one lies inside.
    early = Record(8.0, [(9.0, 1), (11.0, 1), (12.0, 1)], done=True)
    inside = Record(12.0, [(12.5, 1), (13.0, 1), (13.5, 2)], done=True)
    late = Record(19.0, [(19.5, 1), (20.5, 1)])
    level = summarize([early, inside, late], concurrency=2, start=10.0, end=20.0)
    assert level.output_tokens == 2 + 4 + 1
    assert level.tokens_per_second == 0.7
    assert level.requests_started == 2 and level.requests_done == 2
    # TTFT of the two started in the window: 0.5 s each.
    assert level.ttft_ms["p50"] == 500.0 and level.ttft_ms["n"] == 2
    # TPOT: early (12-9)/2 = 1.5 s, inside (13.5-12.5)/3 tokens after the first.
    assert level.tpot_ms["p50"] == round((1500 + 1000 / 3) / 2, 2)
    assert level.tokens_per_request == 3.5


def test_errors_are_counted_and_sampled() -> None:
    failed = Record(11.0, error="RuntimeError: boom")
    level = summarize([failed, Record(12.0, error="RuntimeError: boom")], 1, 10.0, 20.0)
    assert level.errors == 2 and level.error_samples == ["RuntimeError: boom"]
    assert level.output_tokens == 0 and level.ttft_ms["n"] == 0


def test_ratios_served_over_in_process_and_top_level_over_one_stream() -> None:
    rows = [
        {"label": "gateway (gRPC stream)", "concurrency": 1, "tokens_per_second": 100.0},
        {"label": "engine in-process", "concurrency": 1, "tokens_per_second": 125.0},
        {"label": "gateway (gRPC stream)", "concurrency": 16, "tokens_per_second": 300.0},
        {"label": "engine in-process", "concurrency": 16, "tokens_per_second": 400.0},
    ]
    values = {r["name"]: r["value"] for r in ratios(rows, [1, 16])}
    assert values == {
        "served / in-process, 1 streams": 0.8,
        "served / in-process, 16 streams": 0.75,
        "engine in-process: 16 streams / 1 stream": 3.2,
        "gateway (gRPC stream): 16 streams / 1 stream": 3.0,
    }


def test_a_generation_without_tokens_has_no_time_per_token() -> None:
    empty = Record(11.0, [], done=True)
    level = summarize([empty], 1, 10.0, 20.0)
    assert level.requests_done == 1 and level.tpot_ms["n"] == 0 and level.ttft_ms["n"] == 0
