"""The metadata store over SQL: one implementation, SQLite or PostgreSQL underneath.

Blocking database calls run on a small thread pool (one thread per connection),
never on the event loop. Every change is one write transaction that first locks
the revision row, so revisions follow commit order on both backends. On
PostgreSQL each change also NOTIFYs the replicas that share the database, and
`listen` follows those notifications (store/listen.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from services.common.errors import ServiceError, Unavailable
from services.registry.domain import (
    AliasChange,
    Event,
    FileInfo,
    Model,
    ModelSnapshot,
    NewVersion,
    Snapshot,
    Version,
    VersionState,
)
from services.registry.names import Selector
from services.registry.store import changes, queries
from services.registry.store.backends import Backend, Connection, PostgresBackend
from services.registry.store.listen import NOTIFY_SQL, ChangeListener, error_text
from services.registry.store.schema import statements

_log = logging.getLogger(__name__)
R = TypeVar("R")


class SqlStore:
    """MetadataStore on a `Backend`; `history` is how many events are kept."""

    def __init__(self, backend: Backend, *, history: int = 10_000) -> None:
        self.backend = backend
        self.history = history
        self._pool: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None
        self._notify_sql = NOTIFY_SQL if isinstance(backend, PostgresBackend) else None

    @property
    def kind(self) -> str:
        return self.backend.name

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(
            self.backend.pool_size, thread_name_prefix=f"registry-{self.backend.name}"
        )
        for _ in range(self.backend.pool_size):
            self._pool.put(None)
        try:
            await self._run(self._create_schema, write=True)
        except Unavailable as exc:
            # At start nobody is waiting for an answer: stop with the reason (a wrong
            # CA, a refused connection), which `maas-registry` prints as one line.
            await self.close()
            cause = error_text(exc.__cause__) if exc.__cause__ else exc.message
            raise ConnectionError(
                f"cannot open the registry database ({self.backend.name}): {cause}"
            ) from exc

    async def close(self) -> None:
        if self._executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_all)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close_all(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            if conn is not None:
                conn.close()

    def _create_schema(self, conn: Connection) -> None:
        if self.backend.schema_lock_sql:
            conn.execute(self.backend.schema_lock_sql)
        for sql in statements(self.backend.key_type):
            conn.execute(sql)

    async def _run(self, fn: Callable[[Connection], R], *, write: bool) -> R:
        if self._executor is None:
            raise Unavailable("the registry store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transact, fn, write)

    def _transact(self, fn: Callable[[Connection], R], write: bool) -> R:
        conn = self._pool.get()
        try:
            if conn is None:
                conn = self.backend.connect()
            conn.begin(write=write)
            try:
                result = fn(conn)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return result
        except ServiceError:
            raise
        except Exception as exc:
            if not self.backend.is_unavailable(exc):
                raise
            _log.warning("database unavailable: %s: %s", type(exc).__name__, error_text(exc))
            if conn is not None:
                _close_quietly(conn)
            conn = None
            raise Unavailable(
                f"the registry database is unavailable ({self.backend.name})"
            ) from exc
        finally:
            self._pool.put(conn)

    async def _change(self, fn: Callable[[changes.Changes], R]) -> R:
        def run(conn: Connection) -> R:
            ch = changes.Changes(
                conn, self.backend.lock_revision_sql, self.history, self._notify_sql
            )
            result = fn(ch)
            ch.finish()
            return result

        return await self._run(run, write=True)

    def listen(self, wake: Callable[[], None]) -> ChangeListener | None:
        """A listener calling `wake` on every change any replica commits (PostgreSQL);
        None where there is no such signal (SQLite has one writer process)."""
        if not isinstance(self.backend, PostgresBackend):
            return None
        return ChangeListener(self.backend.url, wake)

    # Models.

    async def create_model(self, name: str, description: str, labels: dict[str, str]) -> Model:
        return await self._change(lambda ch: changes.create_model(ch, name, description, labels))

    async def get_model(self, name: str) -> Model:
        return await self._run(lambda c: queries.get_model(c, name), write=False)

    async def list_models(
        self, *, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Model], int]:
        def read(c: Connection) -> tuple[list[Model], int]:
            models = queries.list_models(c, prefix=prefix, after=after, limit=limit)
            return models, queries.revision(c)

        return await self._run(read, write=False)

    async def delete_model(self, name: str) -> list[str]:
        return await self._change(lambda ch: changes.delete_model(ch, name))

    # Versions.

    async def add_version(self, new: NewVersion) -> Version:
        return await self._change(lambda ch: changes.add_version(ch, new))

    async def get_version(self, model: str, version: int) -> Version:
        return await self._run(lambda c: queries.get_version(c, model, version), write=False)

    async def list_versions(
        self, model: str, *, after: int, limit: int, state: VersionState | None
    ) -> tuple[list[Version], int]:
        def read(c: Connection) -> tuple[list[Version], int]:
            queries.require_model(c, model)
            found = queries.list_versions(c, model, after=after, limit=limit, state=state)
            return found, queries.revision(c)

        return await self._run(read, write=False)

    async def archive_version(self, model: str, version: int) -> Version:
        return await self._change(lambda ch: changes.archive_version(ch, model, version))

    async def delete_version(self, model: str, version: int) -> list[str]:
        return await self._change(lambda ch: changes.delete_version(ch, model, version))

    # Aliases and resolution.

    async def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        return await self._change(lambda ch: changes.set_alias(ch, model, alias, version))

    async def delete_alias(self, model: str, alias: str) -> None:
        await self._change(lambda ch: changes.delete_alias(ch, model, alias))

    async def resolve(self, model: str, selector: Selector) -> Version:
        return await self._run(lambda c: queries.resolve(c, model, selector), write=False)

    async def snapshot(self, model: str | None) -> Snapshot:
        def read(c: Connection) -> Snapshot:
            if model is not None:
                models = [queries.get_model(c, model)]
            else:
                models = queries.list_models(c, prefix="", after=None, limit=1 << 62)
            entries = [ModelSnapshot(m, queries.list_versions(c, m.name)) for m in models]
            return Snapshot(queries.revision(c), entries)

        return await self._run(read, write=False)

    # Events.

    async def events_since(self, revision: int, limit: int) -> list[Event]:
        return await self._run(lambda c: queries.events_since(c, revision, limit), write=False)

    async def event_window(self) -> tuple[int, int]:
        def read(c: Connection) -> tuple[int, int]:
            current = queries.revision(c)
            oldest = queries.oldest_event(c)
            return (current + 1 if oldest is None else oldest), current

        return await self._run(read, write=False)

    async def current_revision(self) -> int:
        return await self._run(queries.revision, write=False)

    # Blob bookkeeping.

    async def referenced_blobs(self) -> set[str]:
        def read(c: Connection) -> set[str]:
            return {r[0] for r in c.execute("SELECT DISTINCT sha256 FROM version_files")}

        return await self._run(read, write=False)

    async def unreferenced(self, shas: set[str]) -> list[str]:
        return await self._run(lambda c: queries.unreferenced(c, shas), write=False)

    async def all_files(self) -> list[tuple[str, int, FileInfo]]:
        def read(c: Connection) -> list[tuple[str, int, FileInfo]]:
            rows = c.execute(
                "SELECT model, version, path, sha256, size_bytes FROM version_files "
                "ORDER BY model, version, path"
            )
            return [(m, int(v), FileInfo(p, s, int(n))) for m, v, p, s, n in rows]

        return await self._run(read, write=False)


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - the connection is being discarded anyway
        _log.debug("closing a broken connection failed", exc_info=True)
