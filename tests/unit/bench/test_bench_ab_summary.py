"""`maas bench ab`: flags split per side, and the run summarised by per-round ratios."""

from __future__ import annotations

import argparse

import pytest

from tools.bench import add_arguments
from tools.bench.ab import Round, report, split_flags, summary


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_each_side_takes_its_own_flags_split_as_a_shell_would() -> None:
    args = parse(
        "ab", "--hop", "gateway", "--a-flag=--event-loop=uvloop", "--b-flag",
        "--log-level 'WARNING'", "--rounds", "4",
    )  # fmt: skip
    assert (args.suite, args.hop, args.rounds) == ("ab", "gateway", 4)
    assert args.a_flag == ["--event-loop=uvloop"]
    assert args.b_flag == ["--log-level 'WARNING'"]
    assert split_flags(args.b_flag) == ["--log-level", "WARNING"]


def test_the_ratio_is_the_median_of_each_rounds_ratio_not_of_the_medians() -> None:
    # Round by round A costs half of B while the machine slows down; the medians of
    # each side alone (150 and 400) would say 0.375.
    a = [Round(100, 900, None), Round(150, 800, None), Round(300, 400, None)]
    b = [Round(200, 800, None), Round(400, 700, None), Round(500, 300, None)]
    result = summary({"a": a, "b": b})
    assert result["cpu_ratios"] == [0.5, 0.375, 0.6]
    assert result["cpu_ratio_median"] == 0.5
    assert result["a"]["cpu_us_per_request"] == 150
    assert result["b"]["requests_per_second"] == 700
    assert result["a"]["inference_cpu_us_per_request"] is None


def test_sides_of_unequal_length_are_refused() -> None:
    with pytest.raises(ValueError):
        summary({"a": [Round(1, 1, None)], "b": []})


def test_the_report_names_each_sides_flags_and_the_inference_behind_a_gateway() -> None:
    a, b = [Round(80, 1000, 50)], [Round(100, 900, 60)]
    document = {
        "hop": "gateway",
        "concurrency": 16,
        "flags": {"a": [], "b": ["--event-loop", "asyncio"]},
        "summary": summary({"a": a, "b": b}),
    }
    text = report(document)
    assert "a: (defaults): gateway 80.0 µs/req, 1000 req/s, inference behind it 50.0" in text
    assert "b: --event-loop asyncio: gateway 100.0 µs/req" in text
    assert "median 0.800" in text
