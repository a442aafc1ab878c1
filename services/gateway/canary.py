"""Weighted traffic splits between versions of a model (canary releases).

A split applies to requests that name no version or name `production`, and that
carry no `x-maas-version` pin. It comes from the canary file
(`canary: {model: {version_or_alias: weight, ...}}`), or from the registry: a
`canary` alias plus a `maas.canary.weight` label (a percentage, on the canary
version or else on the model) sends that share to the canary alias's version and
the rest where the request would have gone. The file wins for the models it names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.gateway.routes import PRODUCTION, ModelRoute

CANARY_ALIAS = "canary"
WEIGHT_LABEL = "maas.canary.weight"


@dataclass(frozen=True)
class Split:
    """Version selectors and their weights (any positive scale)."""

    choices: tuple[tuple[str, float], ...]

    def pick(self, rng: random.Random) -> str:
        """One selector, drawn with probability proportional to its weight."""
        selectors = [s for s, _ in self.choices]
        return rng.choices(selectors, weights=[w for _, w in self.choices])[0]


def parse_canary(data: Any, *, source: str) -> dict[str, Split]:
    """Splits from a parsed canary file."""
    if data is None:
        return {}
    table = data.get("canary") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise ValueError(f"{source}: expected a mapping with a 'canary' mapping")
    splits = {}
    for model, weights in table.items():
        where = f"{source}: canary.{model}"
        if not isinstance(weights, dict) or not weights:
            raise ValueError(f"{where}: expected a mapping of version or alias to weight")
        choices = []
        for selector, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ValueError(f"{where}.{selector}: weight must be a number >= 0")
            choices.append((str(selector), float(weight)))
        if sum(w for _, w in choices) <= 0:
            raise ValueError(f"{where}: the weights add up to 0")
        splits[str(model)] = Split(tuple((s, w) for s, w in choices if w > 0))
    return splits


def load_canary(path: str | None) -> dict[str, Split]:
    """Splits from a canary YAML file, or none."""
    if not path:
        return {}
    return parse_canary(yaml.safe_load(Path(path).read_text()), source=path)


def registry_split(model: ModelRoute, requested: str) -> Split | None:
    """The split the registry's `canary` alias and weight label describe, if any."""
    canary = model.aliases.get(CANARY_ALIAS)
    if canary is None:
        return None
    version = model.versions.get(canary)
    text = (version.labels.get(WEIGHT_LABEL) if version else None) or model.labels.get(WEIGHT_LABEL)
    try:
        weight = float(text) if text else 0.0
    except ValueError:
        return None
    weight = min(max(weight, 0.0), 100.0)
    if weight <= 0:
        return None
    return Split(((CANARY_ALIAS, weight), (requested, 100.0 - weight)))


class CanaryPolicy:
    """Decides, per request, which version selector a split sends it to."""

    def __init__(self, configured: dict[str, Split], rng: random.Random) -> None:
        self.configured = configured
        self.rng = rng

    def choose(self, model: str, requested: str, route: ModelRoute | None) -> str | None:
        """The selector to use instead of `requested`, or None when no split applies."""
        if requested not in ("", PRODUCTION):
            return None
        split = self.configured.get(model)
        if split is None and route is not None:
            split = registry_split(route, requested)
        if split is None:
            return None
        return split.pick(self.rng)
