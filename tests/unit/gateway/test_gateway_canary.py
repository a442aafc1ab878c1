"""Canary weights: the file format, the registry's alias and label, seeded draws."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from services.gateway.canary import CanaryPolicy, Split, load_canary, parse_canary
from services.gateway.routes import ModelRoute, VersionRoute


def test_seeded_split_follows_the_weights() -> None:
    split = Split((("production", 90.0), ("canary", 10.0)))
    rng = random.Random(42)
    counts = collections.Counter(split.pick(rng) for _ in range(10_000))
    assert abs(counts["canary"] / 10_000 - 0.10) < 0.01
    # The same seed gives the same sequence.
    first = [split.pick(random.Random(7)) for _ in range(3)]
    assert first == [split.pick(random.Random(7)) for _ in range(3)]


def test_canary_file(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("canary:\n  digits: {production: 90, canary: 10}\n  pair: {1: 1, 2: 0}\n")
    splits = load_canary(str(path))
    assert splits["digits"].choices == (("production", 90.0), ("canary", 10.0))
    assert splits["pair"].choices == (("1", 1.0),)  # zero weights drop out
    assert load_canary(None) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"canary": []}, "expected a mapping with a 'canary' mapping"),
        ({"canary": {"m": {}}}, "expected a mapping of version or alias to weight"),
        ({"canary": {"m": {"1": -1}}}, "weight must be a number >= 0"),
        ({"canary": {"m": {"1": "ten"}}}, "weight must be a number >= 0"),
        ({"canary": {"m": {"1": 0}}}, "add up to 0"),
    ],
)
def test_bad_canary_files(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_canary(data, source="canary.yaml")


def model(labels: dict[str, str], version_labels: dict[str, str] | None = None) -> ModelRoute:
    return ModelRoute(
        "digits",
        labels=labels,
        versions={1: VersionRoute(), 2: VersionRoute(labels=version_labels or {})},
        aliases={"production": 1, "canary": 2},
    )


def test_registry_split_from_the_canary_alias_and_weight_label() -> None:
    policy = CanaryPolicy({}, random.Random(3))
    route = model({"maas.canary.weight": "25"})
    picks = collections.Counter(policy.choose("digits", "", route) for _ in range(4000))
    assert set(picks) == {"canary", ""}
    assert abs(picks["canary"] / 4000 - 0.25) < 0.03
    assert {policy.choose("digits", "production", route) for _ in range(200)} == {
        "canary",
        "production",
    }
    # A request naming any other version is never split.
    assert policy.choose("digits", "1", route) is None
    assert policy.choose("digits", "latest", route) is None
    # The canary version's own label wins over the model's.
    only_canary = model({"maas.canary.weight": "0"}, {"maas.canary.weight": "100"})
    assert {policy.choose("digits", "", only_canary) for _ in range(50)} == {"canary"}
    # No weight, a bad weight or no canary alias: no split.
    assert policy.choose("digits", "", model({})) is None
    assert policy.choose("digits", "", model({"maas.canary.weight": "lots"})) is None
    no_alias = model({"maas.canary.weight": "50"})
    del no_alias.aliases["canary"]
    assert policy.choose("digits", "", no_alias) is None


def test_the_file_wins_over_the_registry() -> None:
    policy = CanaryPolicy({"digits": Split((("1", 1.0),))}, random.Random(0))
    route = model({"maas.canary.weight": "100"})
    assert {policy.choose("digits", "", route) for _ in range(20)} == {"1"}
    assert policy.choose("other", "", None) is None
