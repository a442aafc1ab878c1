"""The registry's tables. Times are microseconds since the epoch (UTC)."""

from __future__ import annotations

SCHEMA_VERSION = 1

# `{key}` is the backend's column type for names.
STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS meta (
        id INTEGER PRIMARY KEY,
        revision BIGINT NOT NULL,
        schema_version INTEGER NOT NULL
    )""",
    "INSERT INTO meta (id, revision, schema_version) VALUES (1, 0, 1) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS models (
        name {key} PRIMARY KEY,
        description TEXT NOT NULL,
        labels TEXT NOT NULL,
        create_time BIGINT NOT NULL
    )""",
    # Outlives its model, so a (name, version) pair is never reused.
    """CREATE TABLE IF NOT EXISTS version_counters (
        model {key} PRIMARY KEY,
        last_version BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        model {key} NOT NULL REFERENCES models (name),
        version BIGINT NOT NULL,
        description TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        config TEXT NOT NULL,
        signature TEXT NOT NULL,
        opset INTEGER NOT NULL,
        ir_version INTEGER NOT NULL,
        create_time BIGINT NOT NULL,
        PRIMARY KEY (model, version)
    )""",
    """CREATE TABLE IF NOT EXISTS version_files (
        model {key} NOT NULL,
        version BIGINT NOT NULL,
        path {key} NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        PRIMARY KEY (model, version, path),
        FOREIGN KEY (model, version) REFERENCES versions (model, version)
    )""",
    "CREATE INDEX IF NOT EXISTS version_files_sha256 ON version_files (sha256)",
    """CREATE TABLE IF NOT EXISTS aliases (
        model {key} NOT NULL,
        alias {key} NOT NULL,
        version BIGINT NOT NULL,
        update_time BIGINT NOT NULL,
        PRIMARY KEY (model, alias),
        FOREIGN KEY (model, version) REFERENCES versions (model, version)
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        revision BIGINT PRIMARY KEY,
        type TEXT NOT NULL,
        model {key} NOT NULL,
        version BIGINT NOT NULL,
        alias TEXT NOT NULL,
        previous_version BIGINT NOT NULL,
        time BIGINT NOT NULL
    )""",
)


def statements(key_type: str) -> list[str]:
    """The DDL with the backend's name column type filled in."""
    return [s.replace("{key}", key_type) for s in STATEMENTS]
