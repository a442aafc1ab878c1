"""Registry mode's pure parts: which versions to keep, and config from labels."""

from __future__ import annotations

from services.inference.config import parse_config
from services.inference.registry_plan import (
    Selection,
    config_from_labels,
    desired_state,
    version_config,
)
from services.registry.domain import (
    FileInfo,
    Model,
    ModelSnapshot,
    Signature,
    Version,
    VersionState,
)


def version(n: int, state: VersionState = VersionState.ACTIVE) -> Version:
    return Version("m", n, (FileInfo("model.onnx", "ab" * 32, 1),), Signature(), state=state)


def snapshot(aliases: dict[str, int], labels: dict[str, str] | None = None) -> ModelSnapshot:
    versions = [version(1), version(2), version(3), version(4, VersionState.ARCHIVED)]
    return ModelSnapshot(Model("m", aliases=aliases, labels=labels or {}), versions)


def test_all_aliases_and_the_latest_active_version_stay_loaded() -> None:
    want = desired_state(snapshot({"production": 1, "canary": 2}), Selection.parse(""))
    assert sorted(want.versions) == [1, 2, 3]
    assert want.aliases == {"production": 1, "canary": 2}


def test_a_selection_of_aliases_keeps_only_theirs() -> None:
    selection = Selection.parse("m:production, other")
    want = desired_state(snapshot({"production": 1, "canary": 2}), selection)
    assert sorted(want.versions) == [1] and want.aliases == {"production": 1}
    assert selection.wants("other") and not selection.wants("third")


def test_config_from_labels_overrides_nested_keys() -> None:
    labels = {
        "maas.config.dynamic_batching.max_batch_size": "16",
        "maas.config.dynamic_batching.preferred_batch_sizes": "[4, 8]",
        "maas.config.instances": "2",
        "team": "vision",
    }
    overrides = config_from_labels(labels)
    assert overrides == {
        "dynamic_batching": {"max_batch_size": 16, "preferred_batch_sizes": [4, 8]},
        "instances": 2,
    }
    import yaml

    config = parse_config(yaml.safe_dump(overrides), source="labels")
    assert config.dynamic_batching.max_batch_size == 16 and config.instances == 2


def test_warmup_comes_from_the_config_file_or_a_label() -> None:
    v = Version(
        "m",
        1,
        (FileInfo("model.onnx", "ab" * 32, 1),),
        Signature(),
        config="warmup: [{inputs: {x: {shape: [3]}}}]",
    )
    config = version_config(v, {})
    assert config.warmup is not None and config.warmup[0].inputs["x"].shape == (3,)
    assert version_config(v, {"maas.config.warmup": "[]"}).warmup == ()
