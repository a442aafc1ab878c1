"""The registry on PostgreSQL over TLS: `sslmode=verify-full&sslrootcert=CA` in the URL.

The cluster accepts only `hostssl` connections, so the registry working at all
shows its connections (the store's pool and the change listener) use TLS; a
certificate from another CA stops the registry with the reason, in one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from services.registry.main import create_server
from services.registry.settings import RegistrySettings
from services.registry.store.listen import ChangeListener
from tests.integration.registry.conftest import ADMIN, StartRegistry
from tests.integration.registry.pg_tls import tls_cluster
from tests.servers import ROOT
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


async def test_a_wrong_ca_fails_with_the_reason(
    tmp_path: Path, port: int, certs: tuple[Ca, Ca, Path]
) -> None:
    settings = RegistrySettings(
        data_dir=tmp_path / "data",
        port=0,
        metrics_port=0,
        admin_token=ADMIN,
        database_url=url(port, certs[1]),
    )
    with pytest.raises(ConnectionError, match="certificate verify failed") as raised:
        await create_server(settings)
    assert str(raised.value).startswith("cannot open the registry database (postgresql): ")


def test_the_registry_process_says_why_in_one_line(
    tmp_path: Path, port: int, certs: tuple[Ca, Ca, Path]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.registry.main", "--port", "0", "--metrics-port", "0"],
        cwd=ROOT,
        env={
            **os.environ,
            "MAAS_REGISTRY_ADMIN_TOKEN": ADMIN,
            "MAAS_REGISTRY_DATA_DIR": str(tmp_path / "data"),
            "MAAS_REGISTRY_DATABASE_URL": url(port, certs[1]),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("maas-registry: cannot open the registry database (postgresql)")
    assert "certificate verify failed" in last
    assert "Traceback" not in done.stderr
