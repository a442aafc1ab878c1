"""Registry mode's plan: which models, versions and aliases to serve, and their config.

Pure functions of a registry snapshot and the server's selection; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from services.inference.config import ModelConfig, parse_config
from services.registry.domain import ModelSnapshot, Version, VersionState


@dataclass(frozen=True)
class Selection:
    """Which models (and, per model, which aliases) to serve; empty means all."""

    models: dict[str, frozenset[str]]

    @classmethod
    def parse(cls, text: str) -> Selection:
        """`digits,resnet:production,resnet:canary` -> digits (all), resnet (two aliases)."""
        models: dict[str, set[str]] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, alias = item.partition(":")
            models.setdefault(name, set())
            if alias:
                models[name].add(alias)
        return cls({k: frozenset(v) for k, v in models.items()})

    def wants(self, model: str) -> bool:
        """Whether this server serves `model`."""
        return not self.models or model in self.models

    def aliases(self, model: str, aliases: dict[str, int]) -> dict[str, int]:
        """The aliases of `model` this server follows."""
        chosen = self.models.get(model)
        return {a: v for a, v in aliases.items() if not chosen or a in chosen}


@dataclass(frozen=True)
class Desired:
    """What one model should look like on this server."""

    versions: dict[int, Version]
    aliases: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)


CONFIG_LABEL = "maas.config."


def config_from_labels(labels: dict[str, str]) -> dict[str, Any]:
    """Serving config from labels such as `maas.config.dynamic_batching.max_batch_size=16`.

    Values are read as YAML scalars (`16`, `true`, `[4, 8]`); labels override the
    version's config file, and version labels override model labels.
    """
    out: dict[str, Any] = {}
    for key, text in sorted(labels.items()):
        if not key.startswith(CONFIG_LABEL):
            continue
        *parents, leaf = key[len(CONFIG_LABEL) :].split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[leaf] = text
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def desired_state(entry: ModelSnapshot, selection: Selection) -> Desired:
    """The versions to keep loaded: every followed alias's version, and the latest."""
    active = {v.version: v for v in entry.versions if v.state is VersionState.ACTIVE}
    aliases = {
        a: v
        for a, v in selection.aliases(entry.model.name, entry.model.aliases).items()
        if v in active
    }
    wanted = set(aliases.values())
    if active and not selection.models.get(entry.model.name):
        wanted.add(max(active))
    return Desired({v: active[v] for v in sorted(wanted)}, aliases, dict(entry.model.labels))


def version_config(version: Version, model_labels: dict[str, str]) -> ModelConfig:
    """A version's serving config: its config file, then model labels, then its labels."""
    source = f"{version.model} v{version.version} config"
    text = version.config
    overrides = config_from_labels({**model_labels, **version.labels})
    if overrides:
        base = yaml.safe_load(text) if text.strip() else {}
        if not isinstance(base, dict):
            base = {}
        text = yaml.safe_dump(_merge(base, overrides))
    return parse_config(text, source=source)
