"""Metadata storage: the MetadataStore interface and its SQL implementation."""

from __future__ import annotations

from pathlib import Path

from services.registry.store.backends import backend_for
from services.registry.store.base import MetadataStore
from services.registry.store.sql import SqlStore

__all__ = ["MetadataStore", "SqlStore", "create_store"]


def create_store(database_url: str | None, data_dir: Path, *, history: int) -> SqlStore:
    """The store a database URL names (SQLite under `data_dir` when None); not yet open."""
    return SqlStore(backend_for(database_url, data_dir), history=history)
