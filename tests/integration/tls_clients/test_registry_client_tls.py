"""RegistryClient over mutual TLS to a real registry (its --tls-cert/--tls-client-ca),
and a client cert rotated under a live client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common import errors
from services.common.tls_client import ClientTLS
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer, create_server
from services.registry.settings import RegistrySettings
from tools.certs import CertFiles, issue, make_ca

ADMIN = "admin-secret"


@pytest.fixture
async def tls_registry(tmp_path: Path) -> AsyncIterator[tuple[int, CertFiles, Path]]:
    """A registry serving mutual TLS with certs from a CA made here."""
    ca = make_ca(tmp_path / "ca")
    cert = issue(ca, tmp_path / "ca", "registry")
    settings = RegistrySettings(
        data_dir=tmp_path / "data",
        host="localhost",
        port=0,
        metrics_port=0,
        admin_token=ADMIN,
        grace_seconds=0.5,
        tls_cert=str(cert.cert),
        tls_key=str(cert.key),
        tls_client_ca=str(ca.cert),
    )
    server: RegistryServer = await create_server(settings)
    port = await server.start()
    yield port, ca, tmp_path
    await server.stop(0)


async def test_registry_client_over_mutual_tls(tls_registry: tuple[int, CertFiles, Path]) -> None:
    port, ca, tmp = tls_registry
    client_cert = issue(ca, tmp / "ca", "client")
    tls = ClientTLS(str(ca.cert), str(client_cert.cert), str(client_cert.key))
    async with RegistryClient(f"localhost:{port}", ADMIN, tls=tls) as client:
        await client.create_model("tls-model")
        assert (await client.get_model("tls-model")).name == "tls-model"
    # No client cert: the registry refuses the handshake; the caller gets UNAVAILABLE.
    async with RegistryClient(f"localhost:{port}", ADMIN, tls=ClientTLS(str(ca.cert))) as client:
        with pytest.raises(errors.Unavailable):
            await client.get_model("tls-model")


async def test_registry_client_follows_a_rotated_cert(
    tls_registry: tuple[int, CertFiles, Path],
) -> None:
    """A client cert from a CA the registry does not trust, replaced by a good one:
    the same RegistryClient then gets through (a new channel, no restart)."""
    port, ca, tmp = tls_registry
    stranger = issue(make_ca(tmp / "other", name="other"), tmp / "other", "client")
    cert, key = tmp / "client.pem", tmp / "client.key"
    cert.write_bytes(stranger.cert.read_bytes())
    key.write_bytes(stranger.key.read_bytes())
    tls = ClientTLS(str(ca.cert), str(cert), str(key))
    client = RegistryClient(f"localhost:{port}", ADMIN, tls=tls, tls_check_seconds=0)
    try:
        with pytest.raises(errors.Unavailable):
            await client.list_models()
        good = issue(ca, tmp / "ca", "client")
        for src, dst in ((good.cert, cert), (good.key, key)):
            tmp_file = dst.with_suffix(".new")
            tmp_file.write_bytes(src.read_bytes())
            os.replace(tmp_file, dst)
        await client.create_model("after-rotation")
        assert [m.name for m in (await client.list_models()).items] == ["after-rotation"]
    finally:
        await client.close()
