"""Registry unit-test fixtures: the metadata store on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.registry.store import SqlStore, create_store
from tests.unit.registry.registry_pg import fresh_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema; skipped when no server can be had."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None (SQLite under tmp_path) or a PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
async def store(database_url: str | None, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """An open store keeping the last 20 events."""
    opened = create_store(database_url, tmp_path, history=20)
    await opened.open()
    yield opened
    await opened.close()
