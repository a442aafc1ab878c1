"""Reads, as plain functions over one connection inside a transaction."""

from __future__ import annotations

from collections import defaultdict

from services.common.errors import NotFound
from services.registry.domain import Event, FileInfo, Model, Version, VersionState
from services.registry.names import DEFAULT_ALIAS, Selector
from services.registry.store.backends import Connection
from services.registry.store.rows import (
    EVENT_COLUMNS,
    MODEL_COLUMNS,
    VERSION_COLUMNS,
    event_from_row,
    model_from_row,
    version_from_row,
)

_LATEST_SQL = "SELECT MAX(version) FROM versions WHERE model = m.name AND state = 'ACTIVE'"


def revision(conn: Connection) -> int:
    """The revision of the last change."""
    return int(conn.execute("SELECT revision FROM meta WHERE id = 1")[0][0])


def aliases_by_model(conn: Connection, names: list[str]) -> dict[str, dict[str, int]]:
    """alias -> version for each of `names`."""
    found: dict[str, dict[str, int]] = defaultdict(dict)
    if names:
        marks = ", ".join("?" * len(names))
        rows = conn.execute(
            f"SELECT model, alias, version FROM aliases WHERE model IN ({marks})", names
        )
        for model, alias, version in rows:
            found[model][alias] = int(version)
    return found


def model_exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM models WHERE name = ?", [name]))


def require_model(conn: Connection, name: str) -> None:
    """NotFound unless model `name` exists."""
    if not model_exists(conn, name):
        raise NotFound(f"model '{name}' not found")


def get_model(conn: Connection, name: str) -> Model:
    """Model `name` with its latest version and aliases; NotFound if absent."""
    models = list_models(conn, prefix="", after=None, limit=1, exact=name)
    if not models:
        raise NotFound(f"model '{name}' not found")
    return models[0]


def list_models(
    conn: Connection, *, prefix: str, after: str | None, limit: int, exact: str | None = None
) -> list[Model]:
    """Models in name order, after `after`, whose name starts with `prefix`."""
    where, params = ["1 = 1"], list[object]()
    if exact is not None:
        where.append("name = ?")
        params.append(exact)
    if prefix:
        where.append("substr(name, 1, ?) = ?")
        params += [len(prefix), prefix]
    if after is not None:
        where.append("name > ?")
        params.append(after)
    rows = conn.execute(
        f"SELECT {MODEL_COLUMNS}, ({_LATEST_SQL}) FROM models m "
        f"WHERE {' AND '.join(where)} ORDER BY name LIMIT ?",
        [*params, limit],
    )
    aliases = aliases_by_model(conn, [r[0] for r in rows])
    return [model_from_row(r[:4], r[4], aliases[r[0]]) for r in rows]


def list_versions(
    conn: Connection,
    model: str,
    *,
    after: int = 0,
    limit: int | None = None,
    state: VersionState | None = None,
    number: int | None = None,
) -> list[Version]:
    """Versions of `model` in increasing order, with their files and aliases."""
    where, params = ["model = ?", "version > ?"], list[object]([model, after])
    if state is not None:
        where.append("state = ?")
        params.append(state.value)
    if number is not None:
        where.append("version = ?")
        params.append(number)
    sql = f"SELECT {VERSION_COLUMNS} FROM versions WHERE {' AND '.join(where)} ORDER BY version"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = conn.execute(sql, params)
    if not rows:
        return []
    low, high = int(rows[0][1]), int(rows[-1][1])
    files: dict[int, list[FileInfo]] = defaultdict(list)
    for version, path, sha256, size in conn.execute(
        "SELECT version, path, sha256, size_bytes FROM version_files "
        "WHERE model = ? AND version BETWEEN ? AND ?",
        [model, low, high],
    ):
        files[int(version)].append(FileInfo(path, sha256, int(size)))
    at: dict[int, list[str]] = defaultdict(list)
    for alias, version in aliases_by_model(conn, [model])[model].items():
        at[version].append(alias)
    return [version_from_row(r, files[int(r[1])], at[int(r[1])]) for r in rows]


def get_version(conn: Connection, model: str, number: int) -> Version:
    """Version `number` of `model`; NotFound naming which is missing."""
    found = list_versions(conn, model, number=number)
    if found:
        return found[0]
    require_model(conn, model)
    raise NotFound(f"model '{model}' has no version {number}")


def alias_target(conn: Connection, model: str, alias: str) -> int | None:
    """The version `alias` points at, or None."""
    rows = conn.execute("SELECT version FROM aliases WHERE model = ? AND alias = ?", [model, alias])
    return int(rows[0][0]) if rows else None


def latest_active(conn: Connection, model: str) -> int | None:
    """The highest ACTIVE version of `model`, or None."""
    rows = conn.execute(
        "SELECT MAX(version) FROM versions WHERE model = ? AND state = 'ACTIVE'", [model]
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def resolve(conn: Connection, model: str, selector: Selector) -> Version:
    """The version a selector names; NotFound saying what was looked for."""
    require_model(conn, model)
    if selector.number:
        return get_version(conn, model, selector.number)
    if selector.alias or selector.is_default:
        alias = selector.alias or DEFAULT_ALIAS
        target = alias_target(conn, model, alias)
        if target is not None:
            return get_version(conn, model, target)
        if selector.alias:
            raise NotFound(f"model '{model}' has no alias '{alias}'")
    latest = latest_active(conn, model)
    if latest is None:
        raise NotFound(f"model '{model}' has no active version")
    return get_version(conn, model, latest)


def events_since(conn: Connection, after: int, limit: int) -> list[Event]:
    """Up to `limit` events with revision > `after`, in order."""
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE revision > ? ORDER BY revision LIMIT ?",
        [after, limit],
    )
    return [event_from_row(r) for r in rows]


def oldest_event(conn: Connection) -> int | None:
    """The revision of the oldest kept event, or None."""
    rows = conn.execute("SELECT MIN(revision) FROM events")
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def unreferenced(conn: Connection, shas: set[str]) -> list[str]:
    """Those of `shas` that no version file references."""
    return sorted(
        sha
        for sha in shas
        if not conn.execute("SELECT 1 FROM version_files WHERE sha256 = ? LIMIT 1", [sha])
    )
