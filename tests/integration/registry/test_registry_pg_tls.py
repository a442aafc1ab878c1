"""The registry on PostgreSQL over TLS: `sslmode=verify-full&sslrootcert=CA` in the URL.

The cluster accepts only `hostssl` connections, so the registry working at all
shows its connections (the store's pool and the change listener) use TLS; a
certificate from another CA is refused with the reason in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from services.common.errors import Unavailable
from services.registry.main import create_server
from services.registry.settings import RegistrySettings
from services.registry.store.listen import ChangeListener
from tests.integration.registry.conftest import ADMIN, StartRegistry
from tests.integration.registry.pg_tls import tls_cluster
from tests.tlscerts import Ca

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ca, Ca, Path]:
    root = tmp_path_factory.mktemp("pgtls")
    ca, other = Ca(root / "ca"), Ca(root / "other", name="another CA")
    return ca, other, root


@pytest.fixture(scope="module")
def port(certs: tuple[Ca, Ca, Path]) -> Iterator[int]:
    with tls_cluster(certs[0].issue("pg", "localhost")) as bound:
        yield bound


def url(port: int, ca: Ca, mode: str = "verify-full") -> str:
    return (
        f"postgresql://postgres@localhost:{port}/postgres"
        f"?sslmode={mode}&sslrootcert={quote(str(ca.cert))}"
    )


async def test_registry_works_over_verified_tls(
    start_registry: StartRegistry, port: int, certs: tuple[Ca, Ca, Path]
) -> None:
    ca = certs[0]
    running = await start_registry(database_url=url(port, ca), watch_poll_seconds=60)
    async with running.client(ADMIN) as admin:
        await admin.create_model("tls-model")
        assert (await admin.get_model("tls-model")).name == "tls-model"
    signal = running.server.registry.hub.signal
    assert isinstance(signal, ChangeListener)
    await asyncio.wait_for(signal.wait_listening(), 10)
    with psycopg.connect(url(port, ca)) as conn:
        rows = conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = %s", [signal.backend_pid]
        ).fetchall()
    assert rows == [(True,)]


def test_plaintext_is_refused(port: int) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable")


async def test_a_wrong_ca_fails_with_the_reason_logged(
    tmp_path: Path, port: int, certs: tuple[Ca, Ca, Path], caplog: pytest.LogCaptureFixture
) -> None:
    settings = RegistrySettings(
        data_dir=tmp_path / "data",
        port=0,
        metrics_port=0,
        admin_token=ADMIN,
        database_url=url(port, certs[1]),
    )
    with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as raised:
        await create_server(settings)
    assert raised.value.message == "the registry database is unavailable (postgresql)"
    assert "certificate verify failed" in caplog.text
