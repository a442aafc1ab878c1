"""The metadata store, the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.registry.domain import (
    EventType,
    FileInfo,
    NewVersion,
    Signature,
    TensorSpec,
    VersionState,
)
from services.registry.names import Selector
from services.registry.store import SqlStore, create_store

SIG = Signature((TensorSpec("X", "FP32", (-1, 4)),), (TensorSpec("Y", "FP32", (-1, 4)),))


def new(model: str, sha: str = "a", alias: str = "", extra: bool = False) -> NewVersion:
    files = [FileInfo("model.onnx", sha * 64, 10)]
    if extra:
        files.append(FileInfo("w.bin", "f" * 64, 100))
    return NewVersion(model, tuple(files), SIG, labels={"k": "v"}, config="x: 1\n", alias=alias)


async def test_create_get_list_models(store: SqlStore) -> None:
    await store.create_model("b", "second", {"team": "x"})
    await store.create_model("a", "first", {})
    with pytest.raises(AlreadyExists, match="model 'a' already exists"):
        await store.create_model("a", "", {})
    model = await store.get_model("b")
    assert (model.name, model.description, model.labels, model.latest_version) == (
        "b",
        "second",
        {"team": "x"},
        0,
    )
    models, revision = await store.list_models(prefix="", after=None, limit=10)
    assert [m.name for m in models] == ["a", "b"]
    assert revision == 2
    models, _ = await store.list_models(prefix="", after="a", limit=10)
    assert [m.name for m in models] == ["b"]
    with pytest.raises(NotFound, match="model 'zzz' not found"):
        await store.get_model("zzz")


async def test_name_prefix_treats_underscore_literally(store: SqlStore) -> None:
    for name in ("res_net", "resxnet", "res.net", "other"):
        await store.create_model(name, "", {})
    models, _ = await store.list_models(prefix="res_", after=None, limit=10)
    assert [m.name for m in models] == ["res_net"]


async def test_versions_numbered_and_never_reused(store: SqlStore) -> None:
    v1 = await store.add_version(new("m", "a", extra=True))
    v2 = await store.add_version(new("m", "b"))
    assert (v1.version, v2.version) == (1, 2)
    assert v1.labels == {"k": "v"} and v1.config == "x: 1\n" and v1.signature == SIG
    assert [f.path for f in v1.files] == ["model.onnx", "w.bin"]
    assert v1.total_size_bytes == 110
    await store.delete_version("m", 2)
    assert (await store.add_version(new("m", "c"))).version == 3
    await store.delete_model("m")
    # A model created again under the same name continues the numbering.
    assert (await store.add_version(new("m", "d"))).version == 4


async def test_list_versions_pages_and_state(store: SqlStore) -> None:
    for sha in "abcde":
        await store.add_version(new("m", sha))
    await store.archive_version("m", 2)
    page, _ = await store.list_versions("m", after=0, limit=2, state=None)
    assert [v.version for v in page] == [1, 2]
    page, _ = await store.list_versions("m", after=2, limit=10, state=None)
    assert [v.version for v in page] == [3, 4, 5]
    active, _ = await store.list_versions("m", after=0, limit=10, state=VersionState.ACTIVE)
    assert [v.version for v in active] == [1, 3, 4, 5]
    with pytest.raises(NotFound):
        await store.list_versions("nope", after=0, limit=10, state=None)


async def test_aliases_block_delete_and_archive(store: SqlStore) -> None:
    await store.add_version(new("m", "a"))
    await store.add_version(new("m", "b", alias="production"))
    assert (await store.get_version("m", 2)).aliases == ("production",)
    with pytest.raises(FailedPrecondition, match=r"production -> 2"):
        await store.delete_version("m", 2)
    with pytest.raises(FailedPrecondition, match="cannot be archived"):
        await store.archive_version("m", 2)
    with pytest.raises(FailedPrecondition, match="cannot be deleted"):
        await store.delete_model("m")
    change = await store.set_alias("m", "production", 1)
    assert (change.alias.version, change.previous_version) == (1, 2)
    await store.delete_version("m", 2)
    await store.delete_alias("m", "production")
    with pytest.raises(NotFound, match="no alias 'production'"):
        await store.delete_alias("m", "production")
    await store.delete_model("m")
    with pytest.raises(NotFound):
        await store.get_model("m")


async def test_alias_needs_active_version(store: SqlStore) -> None:
    await store.add_version(new("m"))
    await store.add_version(new("m"))
    await store.archive_version("m", 1)
    with pytest.raises(FailedPrecondition, match="expected an ACTIVE version, got ARCHIVED"):
        await store.set_alias("m", "canary", 1)
    with pytest.raises(NotFound, match="no version 9"):
        await store.set_alias("m", "canary", 9)


async def test_resolve(store: SqlStore) -> None:
    for _ in range(3):
        await store.add_version(new("m"))
    assert (await store.resolve("m", Selector())).version == 3
    await store.archive_version("m", 3)
    assert (await store.resolve("m", Selector(latest=True))).version == 2
    assert (await store.resolve("m", Selector(number=3))).state is VersionState.ARCHIVED
    await store.set_alias("m", "production", 1)
    assert (await store.resolve("m", Selector())).version == 1
    await store.set_alias("m", "canary", 2)
    assert (await store.resolve("m", Selector(alias="canary"))).version == 2
    with pytest.raises(NotFound, match="no alias 'staging'"):
        await store.resolve("m", Selector(alias="staging"))
    with pytest.raises(NotFound, match="model 'x' not found"):
        await store.resolve("x", Selector())


async def test_events_in_revision_order(store: SqlStore) -> None:
    await store.add_version(new("m", alias="production"))
    await store.add_version(new("m"))
    await store.set_alias("m", "production", 2)
    await store.set_alias("m", "production", 2)  # no change, no event
    await store.archive_version("m", 1)
    await store.delete_version("m", 1)
    await store.delete_alias("m", "production")
    events = await store.events_since(0, 100)
    assert [(e.revision, e.type, e.version) for e in events] == [
        (1, EventType.MODEL_CREATED, 0),
        (2, EventType.VERSION_ADDED, 1),
        (3, EventType.ALIAS_SET, 1),
        (4, EventType.VERSION_ADDED, 2),
        (5, EventType.ALIAS_MOVED, 2),
        (6, EventType.VERSION_ARCHIVED, 1),
        (7, EventType.VERSION_DELETED, 1),
        (8, EventType.ALIAS_DELETED, 2),
    ]
    assert events[4].previous_version == 1
    assert await store.current_revision() == 8
    assert await store.event_window() == (1, 8)


async def test_failed_change_leaves_no_event(store: SqlStore) -> None:
    await store.add_version(new("m", alias="production"))
    with pytest.raises(FailedPrecondition):
        await store.delete_version("m", 1)
    assert await store.current_revision() == 3
    assert len(await store.events_since(0, 100)) == 3


async def test_history_is_pruned(store: SqlStore) -> None:
    for _ in range(30):
        await store.add_version(new("m"))
    oldest, current = await store.event_window()
    assert current == 31
    assert oldest == 12  # the last 20 are kept
    assert [e.revision for e in await store.events_since(0, 5)] == [12, 13, 14, 15, 16]


async def test_blob_references(store: SqlStore) -> None:
    await store.add_version(new("m", "a", extra=True))
    await store.add_version(new("m", "a"))
    assert await store.referenced_blobs() == {"a" * 64, "f" * 64}
    assert await store.delete_version("m", 1) == ["f" * 64]  # "a" is still used by v2
    assert await store.delete_version("m", 2) == ["a" * 64]
    assert await store.unreferenced({"a" * 64}) == ["a" * 64]


async def test_snapshot(store: SqlStore) -> None:
    await store.add_version(new("a", alias="production"))
    await store.add_version(new("b"))
    await store.add_version(new("b"))
    snap = await store.snapshot(None)
    assert snap.revision == 6
    assert [(s.model.name, [v.version for v in s.versions]) for s in snap.models] == [
        ("a", [1]),
        ("b", [1, 2]),
    ]
    assert snap.models[0].model.aliases == {"production": 1}
    assert [s.model.name for s in (await store.snapshot("b")).models] == ["b"]


async def test_concurrent_versions_are_distinct(store: SqlStore) -> None:
    made = await asyncio.gather(*(store.add_version(new("m")) for _ in range(20)))
    assert sorted(v.version for v in made) == list(range(1, 21))
    assert await store.current_revision() == 21


async def test_reopen_keeps_everything(database_url: str | None, tmp_path: Path) -> None:
    first = create_store(database_url, tmp_path, history=20)
    await first.open()
    await first.add_version(new("m", alias="production"))
    await first.close()
    second = create_store(database_url, tmp_path, history=20)
    await second.open()
    try:
        assert (await second.resolve("m", Selector())).aliases == ("production",)
        assert await second.current_revision() == 3
    finally:
        await second.close()
