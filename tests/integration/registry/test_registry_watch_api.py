"""Watch over gRPC: resume after a disconnect without a gap, RESYNC when too far behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.registry.domain import Event, EventType
from tests.integration.registry.conftest import Running, StartRegistry
from tests.unit.registry.registry_onnx import add_model, save


async def take(stream: AsyncIterator[Event], count: int) -> list[Event]:
    return [await asyncio.wait_for(anext(stream), 10) for _ in range(count)]


async def test_resume_from_revision(registry: Running, tmp_path: Path) -> None:
    model = save(add_model(), tmp_path / "m.onnx")
    async with registry.client() as admin, registry.client() as watcher:
        listed = await admin.list_models()
        stream = watcher.watch(listed.revision)
        await admin.upload("m", model, alias="production")
        seen = await take(stream, 3)
        assert [e.type for e in seen] == [
            EventType.MODEL_CREATED,
            EventType.VERSION_ADDED,
            EventType.ALIAS_SET,
        ]
        await stream.aclose()  # type: ignore[attr-defined]
        # While nobody watches:
        await admin.upload("m", model)
        await admin.set_alias("m", "production", 2)
        await admin.archive_version("m", 1)
        resumed = watcher.watch(seen[-1].revision)
        events = await take(resumed, 3)
        assert [(e.revision, e.type, e.version) for e in events] == [
            (4, EventType.VERSION_ADDED, 2),
            (5, EventType.ALIAS_MOVED, 2),
            (6, EventType.VERSION_ARCHIVED, 1),
        ]
        assert events[1].previous_version == 1
        await resumed.aclose()  # type: ignore[attr-defined]


async def test_client_reconnects_after_server_restart(
    start_registry: StartRegistry, tmp_path: Path
) -> None:
    model = save(add_model(), tmp_path / "m.onnx")
    first = await start_registry()
    async with first.client() as watcher:
        stream = watcher.watch(0, min_backoff=0.05, max_backoff=0.2)
        async with first.client() as admin:
            await admin.upload("m", model)
        assert [e.revision for e in await take(stream, 2)] == [1, 2]
        await first.server.stop(0)
        # Same data, same port: the watcher's channel reconnects on its own.
        second = await start_registry(port=first.port)
        async with second.client() as admin:
            await admin.upload("m", model)
            await admin.set_alias("m", "canary", 2)
        events = await take(stream, 2)
        assert [(e.revision, e.type) for e in events] == [
            (3, EventType.VERSION_ADDED),
            (4, EventType.ALIAS_SET),
        ]
        await stream.aclose()  # type: ignore[attr-defined]


async def test_too_far_behind_gets_resync(start_registry: StartRegistry, tmp_path: Path) -> None:
    registry = await start_registry(watch_history=3)
    model = save(add_model(), tmp_path / "m.onnx")
    async with registry.client() as client:
        for _ in range(4):
            await client.upload("m", model)
        stream = client.watch(1, bookmarks=True)
        first, bookmark = await take(stream, 2)
        assert (first.type, first.revision) == (EventType.RESYNC, 5)
        assert (bookmark.type, bookmark.revision) == (EventType.BOOKMARK, 5)
        await client.upload("m", model)
        assert [(e.type, e.revision) for e in await take(stream, 1)] == [
            (EventType.VERSION_ADDED, 6)
        ]
        await stream.aclose()  # type: ignore[attr-defined]


async def test_model_filter_and_many_watchers(registry: Running, tmp_path: Path) -> None:
    model = save(add_model(), tmp_path / "m.onnx")
    async with registry.client() as client:
        streams = [client.watch(0, model="b") for _ in range(20)]
        await client.upload("a", model)
        await client.upload("b", model)
        for stream in streams:
            got = await take(stream, 2)
            assert [(e.model, e.type) for e in got] == [
                ("b", EventType.MODEL_CREATED),
                ("b", EventType.VERSION_ADDED),
            ]
            await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert registry.server.registry.hub.subscriber_count == 0
