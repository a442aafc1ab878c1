"""Registry integration fixtures: real servers on port 0, real gRPC, real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.registry.client import RegistryClient
from services.registry.main import RegistryServer, create_server
from services.registry.settings import RegistrySettings
from tests.unit.registry.registry_pg import fresh_schema

ADMIN = "admin-secret"
READER = "reader-secret"


class Running:
    """A started in-process registry."""

    def __init__(self, server: RegistryServer, port: int, settings: RegistrySettings) -> None:
        self.server = server
        self.port = port
        self.settings = settings

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def client(self, token: str | None = ADMIN) -> RegistryClient:
        return RegistryClient(self.address, token)


StartRegistry = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_registry(tmp_path: Path) -> AsyncIterator[StartRegistry]:
    """Start registries with settings overrides; all are stopped at the end."""
    running: list[Running] = []

    async def start(**overrides: Any) -> Running:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "host": "localhost",
            "port": 0,
            "metrics_port": 0,
            "admin_token": ADMIN,
            "reader_token": READER,
            "grace_seconds": 0.5,
            "watch_poll_seconds": 0.2,
        }
        values.update(overrides)
        settings = RegistrySettings(**values)
        server = await create_server(settings)
        port = await server.start()
        running.append(Running(server, port, settings))
        return running[-1]

    yield start
    for item in running:
        await item.server.stop(0)


@pytest.fixture
async def registry(start_registry: StartRegistry) -> Running:
    """A registry on SQLite with an admin and a reader token."""
    return await start_registry()


@pytest.fixture
async def admin(registry: Running) -> AsyncIterator[RegistryClient]:
    """A client with the admin token."""
    async with registry.client(ADMIN) as client:
        yield client


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the data dir) or a PostgreSQL URL with a fresh schema."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_schema() as url:
            yield url
