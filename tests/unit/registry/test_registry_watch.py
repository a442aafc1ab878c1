"""The change-feed hub: replay, live hand-over, RESYNC, overflow, filters, close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.registry.domain import Event, EventType, FileInfo, NewVersion, Signature
from services.registry.store import SqlStore
from services.registry.watch import WatchHub


async def add(store: SqlStore, hub: WatchHub, model: str = "m") -> None:
    await store.add_version(NewVersion(model, (FileInfo("model.onnx", "a" * 64, 1),), Signature()))
    hub.notify()


async def take(stream: AsyncIterator[Event], count: int) -> list[Event]:
    return [await asyncio.wait_for(anext(stream), 5) for _ in range(count)]


def kinds(events: list[Event]) -> list[tuple[int, EventType]]:
    return [(e.revision, e.type) for e in events]


async def started(store: SqlStore, **kwargs: float) -> WatchHub:
    hub = WatchHub(store, poll_seconds=0.05, **kwargs)  # type: ignore[arg-type]
    await hub.start()
    return hub


async def test_replay_then_live(store: SqlStore) -> None:
    await add(store, WatchHub(store))
    hub = await started(store)
    try:
        stream = hub.subscribe(0)
        assert kinds(await take(stream, 3)) == [
            (1, EventType.MODEL_CREATED),
            (2, EventType.VERSION_ADDED),
            (2, EventType.BOOKMARK),
        ]
        await add(store, hub)
        assert kinds(await take(stream, 1)) == [(3, EventType.VERSION_ADDED)]
        await stream.aclose()  # type: ignore[attr-defined]
        assert hub.subscriber_count == 0
    finally:
        await hub.close()


async def test_from_now_and_filter(store: SqlStore) -> None:
    hub = await started(store, bookmark_seconds=0.1)
    try:
        stream = hub.subscribe(None, model="b")
        assert kinds(await take(stream, 1)) == [(0, EventType.BOOKMARK)]
        await add(store, hub, "a")
        await add(store, hub, "b")
        events = await take(stream, 2)
        assert [(e.type, e.model) for e in events] == [
            (EventType.MODEL_CREATED, "b"),
            (EventType.VERSION_ADDED, "b"),
        ]
        # Idle: a bookmark tells the filtered subscriber how far it has got.
        await add(store, hub, "a")
        assert kinds(await take(stream, 1)) == [(5, EventType.BOOKMARK)]
    finally:
        await hub.close()


async def test_too_far_behind_gets_resync(store: SqlStore) -> None:
    hub = await started(store)
    for _ in range(30):  # history keeps 20 events
        await add(store, hub)
    try:
        stream = hub.subscribe(3)
        assert kinds(await take(stream, 2)) == [(31, EventType.RESYNC), (31, EventType.BOOKMARK)]
        future = hub.subscribe(99)
        assert kinds(await take(future, 1)) == [(31, EventType.RESYNC)]
        recent = hub.subscribe(25)
        assert [e.revision for e in await take(recent, 6)] == [26, 27, 28, 29, 30, 31]
    finally:
        await hub.close()


async def test_slow_subscriber_overflows_into_resync(store: SqlStore) -> None:
    hub = await started(store, queue_size=3)
    try:
        stream = hub.subscribe(None)
        await take(stream, 1)  # bookmark; now following live events
        for _ in range(6):
            await add(store, hub)
        while hub.position < 7:
            await asyncio.sleep(0.01)
        # 7 events into a queue of 3: the backlog was dropped for a RESYNC at the
        # newest revision, and the feed goes on after it.
        assert kinds(await take(stream, 1)) == [(7, EventType.RESYNC)]
        await add(store, hub)
        assert kinds(await take(stream, 1)) == [(8, EventType.VERSION_ADDED)]
    finally:
        await hub.close()


async def test_many_subscribers_and_close(store: SqlStore) -> None:
    hub = await started(store)
    streams = [hub.subscribe(0) for _ in range(50)]
    for s in streams:
        await take(s, 1)
    await add(store, hub)
    for s in streams:
        assert kinds(await take(s, 2)) == [
            (1, EventType.MODEL_CREATED),
            (2, EventType.VERSION_ADDED),
        ]
    assert hub.subscriber_count == 50
    await hub.close()
    for s in streams:
        assert await anext(s, None) is None
    assert hub.subscriber_count == 0
