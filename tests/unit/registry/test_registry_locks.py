"""The blob lock across processes: PostgreSQL advisory locks, on a real server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from services.common.errors import Unavailable
from services.registry.store.backends import backend_for
from services.registry.store.locks import BLOB_LOCK_KEY, AdvisoryBlobLock, LocalBlobLock

pytestmark = pytest.mark.postgres
WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s"


async def waiters(url: str, count: int) -> None:
    """Until `count` sessions wait for the blob lock in PostgreSQL."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(WAITING, (BLOB_LOCK_KEY,)).fetchone() != (count,):
            assert time.monotonic() < deadline, "timed out waiting for lock waiters"
            await asyncio.sleep(0.02)


def test_each_backend_brings_its_lock(pg_url: str, tmp_path: Path) -> None:
    assert isinstance(backend_for(pg_url, tmp_path).blob_lock(), AdvisoryBlobLock)
    assert isinstance(backend_for(None, tmp_path).blob_lock(), LocalBlobLock)


async def test_two_replicas_exclude_each_other(pg_url: str) -> None:
    a, b = AdvisoryBlobLock(pg_url), AdvisoryBlobLock(pg_url)
    order: list[str] = []
    async with a:
        entering = asyncio.create_task(b.__aenter__())
        await waiters(pg_url, 1)
        order.append("a done")
    await entering
    order.append("b in")
    await b.__aexit__(None, None, None)
    assert order == ["a done", "b in"]
    await a.close()
    await b.close()


async def test_a_cancelled_wait_gives_the_lock_back(pg_url: str) -> None:
    a, b, c = (AdvisoryBlobLock(pg_url) for _ in range(3))
    await a.__aenter__()
    entering = asyncio.create_task(b.__aenter__())
    await waiters(pg_url, 1)
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    await a.__aexit__(None, None, None)
    # B's thread got the lock after its caller had gone; it must have given it back.
    await asyncio.wait_for(c.__aenter__(), 30)
    await c.__aexit__(None, None, None)
    async with b:  # and B itself is usable again
        pass
    for lock in (a, b, c):
        await lock.close()


async def test_an_unreachable_database_is_unavailable() -> None:
    lock = AdvisoryBlobLock("postgresql://nobody@/none?host=/nonexistent-socket-dir&port=1")
    with pytest.raises(Unavailable, match="database is unreachable"):
        async with lock:
            pass
    await lock.close()


async def test_a_dropped_connection_is_replaced(pg_url: str) -> None:
    lock = AdvisoryBlobLock(pg_url)
    async with lock:
        pass
    pid = lock.session_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        name = admin.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        assert name == ("maas-registry blob lock",)
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    async with lock:  # the dead session is noticed and a new one takes the lock
        assert lock.session_pid not in (None, pid)
    await lock.close()
