"""Client TLS (services.common.tls_client) against a real grpc.aio TLS server.

The server is started here with grpc.ssl_server_credentials and certificates from
tools.certs; it answers the caller's certificate name, so a test sees which client
certificate a channel presented.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from services.common.tls_client import ChannelSource, ClientTLS, TLSFileError
from services.gateway.backends import Backend, PoolOptions
from tools.certs import CertFiles, issue, make_ca

WHO = "/test.Tls/Who"


@dataclass
class TlsServer:
    port: int
    ca: CertFiles
    other_ca: CertFiles
    hold: asyncio.Event
    held: asyncio.Event
    dir: Path


def _bundle(path: Path, *cas: CertFiles) -> Path:
    path.write_bytes(b"".join(ca.cert.read_bytes() for ca in cas))
    return path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[TlsServer]:
    """A TLS server (cert for localhost from CA a) requiring client certs from CA a or b."""
    ca = make_ca(tmp_path / "a")
    other = make_ca(tmp_path / "b", name="other CA")
    server_cert = issue(ca, tmp_path / "a", "server")
    hold, held = asyncio.Event(), asyncio.Event()

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"hold":
            held.set()
            await hold.wait()
        names = context.auth_context().get("x509_common_name", [b"?"])
        return names[0]

    handler = grpc.method_handlers_generic_handler(
        "test.Tls", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(server_cert.key.read_bytes(), server_cert.cert.read_bytes())],
        root_certificates=_bundle(tmp_path / "clients.pem", ca, other).read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield TlsServer(port, ca, other, hold, held, tmp_path)
    await server.stop(0)


async def _who(channel: grpc.aio.Channel, request: bytes = b"") -> bytes:
    result: bytes = await channel.unary_unary(WHO)(request, timeout=10)
    return result


async def test_mutual_tls_with_the_ca_and_a_client_cert(tls_server: TlsServer) -> None:
    client = issue(tls_server.ca, tls_server.dir / "a", "client-one")
    tls = ClientTLS(str(tls_server.ca.cert), str(client.cert), str(client.key))
    source = ChannelSource(f"localhost:{tls_server.port}", tls)
    try:
        assert await _who(source.current()) == b"client-one"
    finally:
        await source.close()


async def test_server_name_override(tls_server: TlsServer) -> None:
    """Dialled by IP, the cert is checked against the override: localhost passes, another fails."""
    client = issue(tls_server.ca, tls_server.dir / "a", "client-one")
    good = ClientTLS(str(tls_server.ca.cert), str(client.cert), str(client.key), "localhost")
    bad = ClientTLS(str(tls_server.ca.cert), str(client.cert), str(client.key), "svc.internal")
    ok, wrong = (ChannelSource(f"127.0.0.1:{tls_server.port}", t) for t in (good, bad))
    try:
        assert await _who(ok.current()) == b"client-one"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _who(wrong.current())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await ok.close()
        await wrong.close()


async def test_wrong_ca_fails_clearly(tls_server: TlsServer) -> None:
    client = issue(tls_server.ca, tls_server.dir / "a", "client-one")
    tls = ClientTLS(str(tls_server.other_ca.cert), str(client.cert), str(client.key))
    source = ChannelSource(f"localhost:{tls_server.port}", tls)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _who(source.current())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        detail = (caught.value.details() or "").lower()
        assert "ssl" in detail or "handshake" in detail or "certificate" in detail, detail
    finally:
        await source.close()


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TLSFileError, match="needs its key"):
        ClientTLS(ca=None, cert="c.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TLSFileError, match="expected PEM"):
        ClientTLS(ca=str(junk)).credentials()
    with pytest.raises(TLSFileError, match="cannot be read"):
        ClientTLS(ca=str(tmp_path / "missing.pem")).credentials()


async def test_rotated_client_cert_makes_a_new_channel(tls_server: TlsServer) -> None:
    """New calls use the new cert; a call in flight on the old channel still finishes."""
    one = issue(tls_server.ca, tls_server.dir / "a", "client-one")
    live = tls_server.dir / "live"
    live.mkdir()
    cert, key = live / "client.pem", live / "client.key"
    cert.write_bytes(one.cert.read_bytes())
    key.write_bytes(one.key.read_bytes())
    tls = ClientTLS(str(tls_server.ca.cert), str(cert), str(key))
    source = ChannelSource(f"localhost:{tls_server.port}", tls, check_seconds=0)
    try:
        first = source.current()
        assert await _who(first) == b"client-one"
        in_flight = asyncio.create_task(_who(first, b"hold"))
        await asyncio.wait_for(tls_server.held.wait(), 10)

        two = issue(tls_server.other_ca, tls_server.dir / "b", "client-two")
        for src, dst in ((two.cert, cert), (two.key, key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)  # a new inode: seen even within one mtime tick
        second = source.current()
        assert second is not first and source.generation == 1
        assert await _who(second) == b"client-two"

        tls_server.hold.set()
        assert await asyncio.wait_for(in_flight, 10) == b"client-one"
        assert source.current() is second  # unchanged files: no new channel
    finally:
        await source.close()


async def test_gateway_backend_channel_follows_rotation(tls_server: TlsServer) -> None:
    one = issue(tls_server.ca, tls_server.dir / "a", "client-one")
    cert, key = tls_server.dir / "gw.pem", tls_server.dir / "gw.key"
    cert.write_bytes(one.cert.read_bytes())
    key.write_bytes(one.key.read_bytes())
    tls = ClientTLS(str(tls_server.ca.cert), str(cert), str(key))
    backend = Backend.connect(
        f"localhost:{tls_server.port}",
        PoolOptions(max_message_bytes=1 << 20, tls=tls, tls_check_seconds=0),
    )
    try:
        assert await backend.method(WHO)(b"", timeout=10) == b"client-one"
        two = issue(tls_server.ca, tls_server.dir / "a", "client-two")
        for src, dst in ((two.cert, cert), (two.key, key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)
        assert await backend.method(WHO)(b"", timeout=10) == b"client-two"
    finally:
        await backend.source.close()
