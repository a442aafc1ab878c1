"""Watch across registry replicas on one PostgreSQL: the LISTEN/NOTIFY wake-up and resume.

Both replicas poll only every 60 s, so an event that reaches the other replica
within a few seconds was carried by the notification, not by the poll. The
replicas run in this process (separate servers, hubs, store connections and data
dirs) on one PostgreSQL schema and one S3 bucket (SeaweedFS).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from services.registry.client import RegistryClient
from services.registry.domain import Event, EventType
from services.registry.store.listen import ChangeListener
from tests.integration.registry.conftest import ADMIN, Running, StartRegistry
from tests.integration.registry.replicas import (  # noqa: F401 - fixtures
    bucket,
    pg_url,
    s3,
    s3_env,
)
from tests.unit.registry.registry_onnx import add_model, save

pytestmark = pytest.mark.postgres
_log = logging.getLogger(__name__)
SLOW_POLL = 60.0  # far longer than any deadline below: only a notification is in time
DEADLINE = 5.0


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(add_model(), tmp_path / "m.onnx")


@pytest.fixture
def start_replica(
    start_registry: StartRegistry,
    pg_url: str,  # noqa: F811
    bucket: str,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> StartRegistry:
    """Start replicas on one database and bucket that poll their feed once a minute."""
    count = 0

    async def start() -> Running:
        nonlocal count
        count += 1
        return await start_registry(
            database_url=pg_url,
            blob_url=f"s3://{bucket}/models",
            data_dir=tmp_path / f"replica-{count}",
            watch_poll_seconds=SLOW_POLL,
            host="127.0.0.1",
        )

    return start


def listener(running: Running) -> ChangeListener:
    signal = running.server.registry.hub.signal
    assert isinstance(signal, ChangeListener)
    return signal


async def until(stream: AsyncIterator[Event], wanted: EventType) -> tuple[Event, float]:
    """The next event of type `wanted`, and when it arrived (monotonic)."""
    async with asyncio.timeout(DEADLINE):
        async for event in stream:
            if event.type is wanted:
                return event, time.monotonic()
    raise AssertionError(f"the watch ended before a {wanted.name} event")


async def test_alias_moved_through_b_reaches_a_watch_at_once(
    start_replica: StartRegistry, model: Path, tmp_path: Path
) -> None:
    a, b = await start_replica(), await start_replica()
    await asyncio.wait_for(listener(a).wait_listening(), DEADLINE)
    async with b.client() as via_b, a.client() as via_a:
        # Upload through A; download and Watch through B.
        start = (await via_b.list_models()).revision
        on_b = via_b.watch(start)
        await via_a.upload("m", model, alias="production")
        await via_a.upload("m", model)
        await via_b.download("m", 2, tmp_path / "got")
        assert (tmp_path / "got" / "model.onnx").read_bytes() == model.read_bytes()
        seen = [await asyncio.wait_for(anext(on_b), DEADLINE) for _ in range(4)]
        assert [(e.type, e.version) for e in seen] == [
            (EventType.MODEL_CREATED, 0),
            (EventType.VERSION_ADDED, 1),
            (EventType.ALIAS_SET, 1),
            (EventType.VERSION_ADDED, 2),
        ]
        await on_b.aclose()  # type: ignore[attr-defined]
        # An alias moved through B reaches a Watch on A.
        stream = via_a.watch(seen[-1].revision, bookmarks=True)
        first, _ = await until(stream, EventType.BOOKMARK)  # subscribed on A
        assert first.revision == seen[-1].revision
        moved_at = time.monotonic()
        await via_b.set_alias("m", "production", 2)
        event, seen_at = await until(stream, EventType.ALIAS_MOVED)
        assert (event.model, event.alias, event.version, event.previous_version) == (
            "m",
            "production",
            2,
            1,
        )
        _log.info("notify latency B -> A watch: %.1f ms", (seen_at - moved_at) * 1000)
        # A version uploaded through B appears on A's watch too.
        await via_b.upload("m", model)
        added, _ = await until(stream, EventType.VERSION_ADDED)
        assert (added.model, added.version) == ("m", 3)
        await stream.aclose()  # type: ignore[attr-defined]


async def test_listener_reconnects_after_its_connection_is_killed(
    start_replica: StartRegistry,
    pg_url: str,  # noqa: F811
    model: Path,
) -> None:
    a, b = await start_replica(), await start_replica()
    signal = listener(a)
    await asyncio.wait_for(signal.wait_listening(), DEADLINE)
    killed = signal.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [killed])
    async with asyncio.timeout(DEADLINE):
        while not (signal.listening and signal.backend_pid != killed):
            await asyncio.sleep(0.02)
    assert signal.connects == 2
    async with b.client() as writer, a.client() as reader:
        stream = reader.watch(None, bookmarks=True)
        await until(stream, EventType.BOOKMARK)
        await writer.upload("m", model)
        created, _ = await until(stream, EventType.VERSION_ADDED)
        assert created.model == "m"
        await stream.aclose()  # type: ignore[attr-defined]


async def test_stopped_replica_closes_its_listening_connection(
    start_replica: StartRegistry,
    pg_url: str,  # noqa: F811
) -> None:
    a = await start_replica()
    signal = listener(a)
    await asyncio.wait_for(signal.wait_listening(), DEADLINE)
    pid = signal.backend_pid

    def alive() -> bool:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
            return bool(rows.fetchall())

    assert alive()
    await a.server.stop(0)
    async with asyncio.timeout(DEADLINE):
        while await asyncio.to_thread(alive):
            await asyncio.sleep(0.05)


async def test_watch_resumes_on_the_other_replica_without_gap_or_duplicate(
    start_replica: StartRegistry, model: Path
) -> None:
    a, b = await start_replica(), await start_replica()
    # One target, both replicas: grpc's pick_first connects to A, then fails over to B.
    target = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
    async with (
        RegistryClient(target, ADMIN) as watcher,
        a.client() as via_a,
        b.client() as via_b,
    ):
        start = (await via_a.list_models()).revision
        stream = watcher.watch(start, min_backoff=0.05, max_backoff=0.2)
        await via_a.upload("m", model)  # MODEL_CREATED, VERSION_ADDED
        await via_b.set_alias("m", "production", 1)
        seen = [await asyncio.wait_for(anext(stream), DEADLINE) for _ in range(3)]
        assert a.server.registry.hub.subscriber_count == 1  # it is A's watch
        await a.server.stop(0)
        # Written while the watcher moves over, and after.
        await via_b.upload("m", model)
        await via_b.set_alias("m", "production", 2)
        await via_b.archive_version("m", 1)
        seen += [await asyncio.wait_for(anext(stream), DEADLINE) for _ in range(3)]
        assert b.server.registry.hub.subscriber_count == 1
        await stream.aclose()  # type: ignore[attr-defined]
    assert [e.revision for e in seen] == list(range(start + 1, start + 7))
    assert [e.type for e in seen] == [
        EventType.MODEL_CREATED,
        EventType.VERSION_ADDED,
        EventType.ALIAS_SET,
        EventType.VERSION_ADDED,
        EventType.ALIAS_MOVED,
        EventType.VERSION_ARCHIVED,
    ]


async def test_subscriber_resumes_from_its_revision_on_any_replica(
    start_replica: StartRegistry, model: Path
) -> None:
    a, b = await start_replica(), await start_replica()
    async with a.client() as via_a, b.client() as via_b:
        start = (await via_a.list_models()).revision
        on_a = via_a.watch(start)
        await via_a.upload("m", model, alias="production")
        first = [await asyncio.wait_for(anext(on_a), DEADLINE) for _ in range(3)]
        await on_a.aclose()  # type: ignore[attr-defined]
        await via_a.upload("m", model)  # while nobody watches
        on_b = via_b.watch(first[-1].revision)
        rest = await asyncio.wait_for(anext(on_b), DEADLINE)
        await on_b.aclose()  # type: ignore[attr-defined]
    assert [e.revision for e in first] == [start + 1, start + 2, start + 3]
    assert (rest.revision, rest.type, rest.version) == (start + 4, EventType.VERSION_ADDED, 2)
