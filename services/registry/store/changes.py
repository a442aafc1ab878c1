"""Writes, as plain functions over one connection inside a write transaction.

Each change appends its events through `Changes`, which numbers them from the
revision row it locked first; the revision row is updated and old events are
pruned in the same transaction, which also notifies the other replicas (on
PostgreSQL: delivered on commit, see store/listen.py).
"""

from __future__ import annotations

from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.registry.domain import (
    Alias,
    AliasChange,
    Event,
    EventType,
    Model,
    NewVersion,
    Version,
    VersionState,
    utcnow,
)
from services.registry.store import queries
from services.registry.store.backends import Connection
from services.registry.store.rows import dump_labels, dump_signature, to_micros


class Changes:
    """Events of one write transaction, numbered from the locked revision."""

    def __init__(
        self, conn: Connection, lock_sql: str, history: int, notify_sql: str | None = None
    ) -> None:
        self.conn = conn
        self.now = utcnow()
        self.revision = int(conn.execute(lock_sql)[0][0])
        self.events: list[Event] = []
        self._history = history
        self._notify_sql = notify_sql

    def emit(
        self, kind: EventType, model: str, version: int = 0, alias: str = "", previous: int = 0
    ) -> None:
        """Append an event at the next revision."""
        self.revision += 1
        event = Event(self.revision, kind, model, version, alias, previous, self.now)
        self.conn.execute(
            "INSERT INTO events (revision, type, model, version, alias, previous_version, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [self.revision, kind.value, model, version, alias, previous, to_micros(self.now)],
        )
        self.events.append(event)

    def finish(self) -> None:
        """Record the new revision, keep only the last `history` events, and notify."""
        if not self.events:
            return
        self.conn.execute("UPDATE meta SET revision = ? WHERE id = 1", [self.revision])
        self.conn.execute("DELETE FROM events WHERE revision <= ?", [self.revision - self._history])
        if self._notify_sql:
            # Queued until commit, dropped on rollback: listeners never wake for nothing.
            self.conn.execute(self._notify_sql, [str(self.revision)])


def create_model(ch: Changes, name: str, description: str, labels: dict[str, str]) -> Model:
    """Insert a model; AlreadyExists if the name is taken."""
    if queries.model_exists(ch.conn, name):
        raise AlreadyExists(f"model '{name}' already exists")
    ch.conn.execute(
        "INSERT INTO models (name, description, labels, create_time) VALUES (?, ?, ?, ?)",
        [name, description, dump_labels(labels), to_micros(ch.now)],
    )
    ch.emit(EventType.MODEL_CREATED, name)
    return Model(name, description, dict(labels), ch.now)


def delete_model(ch: Changes, name: str) -> list[str]:
    """Delete a model and its versions; the blobs nothing references any more."""
    queries.require_model(ch.conn, name)
    _refuse_aliases(ch.conn, name, None, f"model '{name}' cannot be deleted")
    shas = {
        r[0] for r in ch.conn.execute("SELECT sha256 FROM version_files WHERE model = ?", [name])
    }
    for table in ("version_files", "versions"):
        ch.conn.execute(f"DELETE FROM {table} WHERE model = ?", [name])
    ch.conn.execute("DELETE FROM models WHERE name = ?", [name])
    ch.emit(EventType.MODEL_DELETED, name)
    return queries.unreferenced(ch.conn, shas)


def add_version(ch: Changes, new: NewVersion) -> Version:
    """Insert a validated version under the next number, creating the model if needed."""
    conn = ch.conn
    if not queries.model_exists(conn, new.model):
        create_model(ch, new.model, "", {})
    rows = conn.execute("SELECT last_version FROM version_counters WHERE model = ?", [new.model])
    number = (int(rows[0][0]) if rows else 0) + 1
    conn.execute(
        "INSERT INTO version_counters (model, last_version) VALUES (?, ?) "
        "ON CONFLICT (model) DO UPDATE SET last_version = excluded.last_version",
        [new.model, number],
    )
    conn.execute(
        "INSERT INTO versions (model, version, description, labels, state, config, signature, "
        "opset, ir_version, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            new.model,
            number,
            new.description,
            dump_labels(new.labels),
            VersionState.ACTIVE.value,
            new.config,
            dump_signature(new.signature),
            new.opset,
            new.ir_version,
            to_micros(ch.now),
        ],
    )
    for f in new.files:
        conn.execute(
            "INSERT INTO version_files (model, version, path, sha256, size_bytes) "
            "VALUES (?, ?, ?, ?, ?)",
            [new.model, number, f.path, f.sha256, f.size_bytes],
        )
    ch.emit(EventType.VERSION_ADDED, new.model, number)
    if new.alias:
        set_alias(ch, new.model, new.alias, number)
    return queries.get_version(conn, new.model, number)


def archive_version(ch: Changes, model: str, number: int) -> Version:
    """Mark a version ARCHIVED (idempotent); refused while an alias points at it."""
    version = queries.get_version(ch.conn, model, number)
    if version.state is VersionState.ARCHIVED:
        return version
    _refuse_aliases(ch.conn, model, number, f"version {number} of '{model}' cannot be archived")
    ch.conn.execute(
        "UPDATE versions SET state = ? WHERE model = ? AND version = ?",
        [VersionState.ARCHIVED.value, model, number],
    )
    ch.emit(EventType.VERSION_ARCHIVED, model, number)
    return queries.get_version(ch.conn, model, number)


def delete_version(ch: Changes, model: str, number: int) -> list[str]:
    """Delete a version; the blobs nothing references any more."""
    version = queries.get_version(ch.conn, model, number)
    _refuse_aliases(ch.conn, model, number, f"version {number} of '{model}' cannot be deleted")
    for table in ("version_files", "versions"):
        ch.conn.execute(f"DELETE FROM {table} WHERE model = ? AND version = ?", [model, number])
    ch.emit(EventType.VERSION_DELETED, model, number)
    return queries.unreferenced(ch.conn, {f.sha256 for f in version.files})


def set_alias(ch: Changes, model: str, alias: str, number: int) -> AliasChange:
    """Point `alias` at an ACTIVE version, creating or moving it."""
    version = queries.get_version(ch.conn, model, number)
    if version.state is not VersionState.ACTIVE:
        raise FailedPrecondition(
            f"alias '{alias}' cannot point at version {number} of '{model}': "
            f"expected an ACTIVE version, got {version.state.value}"
        )
    previous = queries.alias_target(ch.conn, model, alias)
    if previous == number:
        return AliasChange(Alias(model, alias, number, ch.now), number)
    ch.conn.execute(
        "INSERT INTO aliases (model, alias, version, update_time) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, "
        "update_time = excluded.update_time",
        [model, alias, number, to_micros(ch.now)],
    )
    if previous is None:
        ch.emit(EventType.ALIAS_SET, model, number, alias)
    else:
        ch.emit(EventType.ALIAS_MOVED, model, number, alias, previous)
    return AliasChange(Alias(model, alias, number, ch.now), previous or 0)


def delete_alias(ch: Changes, model: str, alias: str) -> None:
    """Remove an alias; NotFound if it does not exist."""
    queries.require_model(ch.conn, model)
    previous = queries.alias_target(ch.conn, model, alias)
    if previous is None:
        raise NotFound(f"model '{model}' has no alias '{alias}'")
    ch.conn.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", [model, alias])
    ch.emit(EventType.ALIAS_DELETED, model, previous, alias, previous)


def _refuse_aliases(conn: Connection, model: str, number: int | None, what: str) -> None:
    aliases = queries.aliases_by_model(conn, [model])[model]
    pointing = sorted(a for a, v in aliases.items() if number is None or v == number)
    if pointing:
        listed = ", ".join(f"{a} -> {aliases[a]}" for a in pointing)
        raise FailedPrecondition(
            f"{what}: aliases point at it ({listed}); expected none, move or delete them first"
        )
