"""`maas bench ab` end to end, briefly: two gateways in front of one inference service,
a round each, real loads; a side whose flags do not start is an error naming them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tools.bench import add_arguments
from tools.bench.ab import bench


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["ab", *argv])


def test_one_round_of_each_gateway_measures_both_hops(tmp_path: Path) -> None:
    args = parse(
        "--hop", "gateway", "--b-flag=--event-loop=asyncio", "--rounds", "1",
        "--seconds", "0.5", "--concurrency", "2", "--processes", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    said: list[str] = []
    document = bench(args, said.append)
    assert document["flags"] == {"a": [], "b": ["--event-loop=asyncio"]}
    for side in ("a", "b"):
        (measured,) = document["rounds"][side]
        assert measured["cpu_us_per_request"] > 0
        assert measured["requests_per_second"] > 0
        assert measured["inference_cpu_us_per_request"] > 0
    assert [line.split(":")[0] for line in said] == ["round 1 a", "round 1 b"]
    assert document["summary"]["cpu_ratio_median"] > 0


def test_a_side_that_cannot_start_names_its_flag(tmp_path: Path) -> None:
    args = parse("--b-flag=--no-such-flag-for-the-ab-test", "--rounds", "1")
    with pytest.raises(RuntimeError) as caught:
        bench(args, print)
    assert "--no-such-flag-for-the-ab-test" in str(caught.value)
