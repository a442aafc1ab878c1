"""The blob lock: orders "store a blob, then insert the version that uses it" against
"delete a version, then delete the blobs nothing uses any more" (and the garbage
collector), so no blob is removed under a version that just deduplicated against it.

One process: an asyncio lock. Several replicas on PostgreSQL: that lock plus a
PostgreSQL session advisory lock held on a connection of its own, so the order
holds across every replica sharing the database.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Protocol

from services.common.errors import Unavailable

_log = logging.getLogger(__name__)

# pg_advisory_lock's key for the blob lock (the schema lock, 7271651, is another).
BLOB_LOCK_KEY = 7271652
# How the lock's sessions show in pg_stat_activity (who holds or waits for it).
APPLICATION_NAME = "maas-registry blob lock"


class BlobLock(Protocol):
    """An async context manager; `close()` releases what it holds for good."""

    async def __aenter__(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def close(self) -> None: ...


class LocalBlobLock:
    """The blob lock of a single registry process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    async def close(self) -> None:
        return None


class AdvisoryBlobLock:
    """The blob lock across replicas: pg_advisory_lock on a dedicated connection.

    The local lock comes first, so one replica's tasks queue in memory and only one
    of them waits in PostgreSQL. If the connection drops, PostgreSQL releases the
    lock with the session; the next acquisition reconnects.
    """

    def __init__(self, url: str, key: int = BLOB_LOCK_KEY) -> None:
        self._url = url
        self._key = key
        self._local = asyncio.Lock()
        self._conn: Any = None
        self._undoing: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> None:
        await self._local.acquire()
        taking = asyncio.ensure_future(asyncio.to_thread(self._take))
        try:
            await asyncio.shield(taking)
        except asyncio.CancelledError:
            # The thread may still get the lock after our caller has gone: a task of
            # its own waits for it and gives it back before the local lock is free.
            undo = asyncio.ensure_future(self._undo(taking))
            self._undoing.add(undo)
            undo.add_done_callback(self._undoing.discard)
            raise
        except BaseException:
            self._local.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await asyncio.shield(asyncio.to_thread(self._give))
        finally:
            self._local.release()

    @property
    def session_pid(self) -> int | None:
        """The PostgreSQL backend of the lock's session, if connected."""
        return None if self._conn is None else int(self._conn.info.backend_pid)

    async def _undo(self, taking: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait([taking])
            if not taking.cancelled() and taking.exception() is None:
                await asyncio.to_thread(self._give)
        finally:
            self._local.release()

    async def close(self) -> None:
        async with self._local:
            await asyncio.to_thread(self._disconnect)

    def _take(self) -> None:
        import psycopg

        # An idle connection may have been dropped (a restart, a NAT timeout): one
        # more try on a fresh one before giving up.
        for fresh in (self._conn is None, True):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._url, autocommit=True, application_name=APPLICATION_NAME
                    )
                self._conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))
                return
            except psycopg.OperationalError as exc:
                self._disconnect()
                if fresh:
                    raise Unavailable("the registry database is unreachable; retry") from exc

    def _give(self) -> None:
        import psycopg

        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except psycopg.Error:
            # Closing the session releases the lock as surely.
            _log.warning("could not release the blob lock; dropping its connection")
            self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
