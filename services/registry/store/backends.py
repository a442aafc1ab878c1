"""Database connections for the SQL store: SQLite (default) and PostgreSQL.

The store writes portable SQL with `?` placeholders; each backend knows how to
connect, begin a transaction, and take the lock that orders every change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from services.registry.store.locks import AdvisoryBlobLock, BlobLock, LocalBlobLock

Row = tuple[Any, ...]


class Connection(Protocol):
    """One database connection used by one thread at a time."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement; the rows it returned (empty for none)."""
        ...

    def begin(self, *, write: bool) -> None:
        """Start a transaction: writes are serialized, reads see one snapshot."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """How to reach one kind of database."""

    name: str
    pool_size: int
    # Column type of names: byte order, so pagination is the same everywhere.
    key_type: str
    # Run first in every write: locks the revision row until commit.
    lock_revision_sql: str
    # Run first when creating the schema, so two processes cannot race.
    schema_lock_sql: str | None

    def connect(self) -> Connection:
        """A new connection."""
        ...

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether `exc` means the database is (temporarily) unreachable or busy."""
        ...

    def blob_lock(self) -> BlobLock:
        """The lock ordering blob writes against blob deletions, for every process
        that shares this database."""
        ...


class _SqliteConnection:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            self._conn.execute(pragma)

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def begin(self, *, write: bool) -> None:
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class SqliteBackend:
    """A SQLite file in WAL mode; one connection, since writers serialize anyway."""

    name = "sqlite"
    pool_size = 1
    key_type = "TEXT"
    lock_revision_sql = "SELECT revision FROM meta WHERE id = 1"
    schema_lock_sql: str | None = None

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return _SqliteConnection(self.path)

    def is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def blob_lock(self) -> BlobLock:
        # One registry process per SQLite file: a lock in memory is enough.
        return LocalBlobLock()


class _PostgresConnection:
    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return list(cursor.fetchall()) if cursor.description else []

    def begin(self, *, write: bool) -> None:
        # Writes are ordered by the row lock on `meta`, so READ COMMITTED sees the
        # latest data once it holds the lock; reads get one consistent snapshot.
        self._conn.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if not self._conn.closed:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class PostgresBackend:
    """PostgreSQL through psycopg 3, a few connections used from worker threads."""

    name = "postgresql"
    key_type = 'TEXT COLLATE "C"'
    lock_revision_sql = "SELECT revision FROM meta WHERE id = 1 FOR UPDATE"
    schema_lock_sql: str | None = "SELECT pg_advisory_xact_lock(7271651)"

    def __init__(self, url: str, pool_size: int = 4) -> None:
        try:
            import psycopg  # noqa: F401 - only to fail early with a clear message
        except ImportError:
            raise ValueError(
                "a postgresql:// database URL needs psycopg 3: pip install 'maas[postgres]'"
            ) from None
        self.url = url
        self.pool_size = pool_size

    def connect(self) -> Connection:
        return _PostgresConnection(self.url)

    def is_unavailable(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError)

    def blob_lock(self) -> BlobLock:
        return AdvisoryBlobLock(self.url)


def backend_for(database_url: str | None, data_dir: Path) -> Backend:
    """The backend a database URL names; SQLite under `data_dir` when there is none."""
    if not database_url:
        return SqliteBackend(data_dir / "registry.db")
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(database_url)
    if database_url.startswith("sqlite:///"):
        return SqliteBackend(Path(database_url.removeprefix("sqlite:///")))
    scheme = database_url.split(":", 1)[0]
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: expected postgresql://... or sqlite:///PATH"
    )
