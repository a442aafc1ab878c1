"""The gateway's v2 REST routes other than inference, through real servers (issue C).

Each route goes through the same app layer as its gRPC call, so auth, scopes,
allow-lists and rate limits answer alike; errors are KServe's {"error": ...} with
the status the error class names.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.common.server import PortInUse
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from services.registry.client import RegistryClient
from services.registry.main import RegistryServer
from tests.integration.conftest import READER
from tests.integration.gateway.conftest import (
    StartGateway,
    StartInference,
    backend_address,
    registry_address,
)

KEYS = """
keys:
  - {id: team-other, key: key-other, models: [other]}
  - {id: team-all, key: key-all}
  - {id: infer-only, key: key-infer, scopes: [inference]}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
"""
LIMIT = 64 * 1024


def url(gateway: GatewayServer, path: str) -> str:
    return f"http://localhost:{gateway.http_port}{path}"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def two_models(pair_repository: Path, tmp_path: Path) -> Path:
    """The pair repository plus the same model as `other` version 1."""
    root = tmp_path / "two-models"
    shutil.copytree(pair_repository, root)
    (root / "other" / "1").mkdir(parents=True)
    shutil.copy(root / "pair" / "1" / "model.onnx", root / "other" / "1" / "model.onnx")
    return root


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def open_gateway(
    start_inference: StartInference, start_gateway: StartGateway
) -> GatewayServer:
    backend = await start_inference()
    return await start_gateway(backends=backend_address(backend), max_message_bytes=LIMIT)


@pytest.fixture
async def keyed_gateway(
    start_inference: StartInference, start_gateway: StartGateway, two_models: Path, tmp_path: Path
) -> GatewayServer:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference(two_models)
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


async def get(
    http: aiohttp.ClientSession, gateway: GatewayServer, path: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.get(url(gateway, path), **kwargs) as response:
        body = await response.read()
        parsed = await response.json(content_type=None) if body else None
        return response.status, parsed, response


async def post(
    http: aiohttp.ClientSession, gateway: GatewayServer, path: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(url(gateway, path), **kwargs) as response:
        body = await response.read()
        parsed = await response.json(content_type=None) if body else None
        return response.status, parsed, response


async def test_health_and_server_metadata(
    open_gateway: GatewayServer, http: aiohttp.ClientSession
) -> None:
    assert (await get(http, open_gateway, "/v2/health/live"))[0] == 200
    assert (await get(http, open_gateway, "/v2/health/ready"))[0] == 200
    status, body, response = await get(http, open_gateway, "/v2")
    assert status == 200 and response.content_type == "application/json"
    assert body["name"] == "maas" and body["version"]
    assert "model_configuration" in body["extensions"]


async def test_model_routes(open_gateway: GatewayServer, http: aiohttp.ClientSession) -> None:
    status, meta, _ = await get(http, open_gateway, "/v2/models/pair")
    assert status == 200, meta
    assert meta["name"] == "pair"
    assert {t["name"]: t["shape"] for t in meta["inputs"]} == {"a": [-1, 4], "b": [-1, 4]}
    assert all(t["datatype"] == "FP32" for t in meta["inputs"] + meta["outputs"])
    status, meta, _ = await get(http, open_gateway, "/v2/models/pair/versions/2")
    assert status == 200 and meta["name"] == "pair"

    for path in ("/v2/models/pair/ready", "/v2/models/pair/versions/1/ready"):
        assert (await get(http, open_gateway, path))[0] == 200, path
    assert (await get(http, open_gateway, "/v2/models/nope/ready"))[0] == 400

    status, config, _ = await get(http, open_gateway, "/v2/models/pair/config")
    assert status == 200 and config["name"] == "pair"
    assert [i["name"] for i in config["input"]] == ["a", "b"]

    status, stats, _ = await get(http, open_gateway, "/v2/models/pair/versions/1/stats")
    assert status == 200
    assert [(s["name"], s["version"]) for s in stats["model_stats"]] == [("pair", "1")]
    assert isinstance(stats["model_stats"][0]["inference_count"], int)
    status, every, _ = await get(http, open_gateway, "/v2/models/stats")
    assert status == 200 and {s["name"] for s in every["model_stats"]} == {"pair"}

    status, rows, _ = await post(http, open_gateway, "/v2/repository/index")
    assert status == 200
    assert {(r["name"], r["version"], r["state"]) for r in rows} >= {("pair", "1", "READY")}
    status, ready, _ = await post(http, open_gateway, "/v2/repository/index", json={"ready": True})
    assert status == 200 and all(r["state"] == "READY" for r in ready)


async def test_errors_are_json_with_their_status(
    open_gateway: GatewayServer, http: aiohttp.ClientSession
) -> None:
    status, body, response = await get(http, open_gateway, "/v2/models/nope")
    assert status == 404 and response.content_type == "application/json"
    assert "nope" in body["error"]
    # As on gRPC: no backend has the version in any state (directory mode knows no
    # registry), so it does not exist.
    status, body, _ = await get(http, open_gateway, "/v2/models/pair/versions/9/config")
    assert status == 404 and "has no version '9'" in body["error"]
    status, body, _ = await get(http, open_gateway, "/v2/nowhere")
    assert status == 404 and body["error"]
    status, body, _ = await post(http, open_gateway, "/v2/health/live")
    assert status == 405 and body["error"]
    for verb in ("load", "unload"):
        status, body, _ = await post(http, open_gateway, f"/v2/repository/models/pair/{verb}")
        assert status == 501 and "registry" in body["error"]
    status, body, _ = await post(http, open_gateway, "/v2/repository/index", data=b"{not json")
    assert status == 400 and "malformed JSON" in body["error"]
    status, body, _ = await post(http, open_gateway, "/v2/repository/index", json={"ready": 3})
    assert status == 400 and "'ready'" in body["error"]
    headers = {"x-maas-timeout-ms": "soon"}
    status, body, _ = await get(http, open_gateway, "/v2/models/pair", headers=headers)
    assert status == 400 and "x-maas-timeout-ms" in body["error"]
    status, body, _ = await get(
        http, open_gateway, "/v2/models/pair", headers={"x-maas-timeout-ms": "5000"}
    )
    assert status == 200


async def test_body_limit_and_encodings(
    open_gateway: GatewayServer, http: aiohttp.ClientSession
) -> None:
    """413 for a declared length over the limit, for a chunked body that grows past it and
    for a compressed body that inflates past it; gzip within the limit is read."""
    big = b" " * (LIMIT + 1)
    status, body, _ = await post(http, open_gateway, "/v2/repository/index", data=big)
    assert status == 413 and f"at most {LIMIT} bytes" in body["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (LIMIT // 2)

    status, body, _ = await post(http, open_gateway, "/v2/repository/index", data=chunks())
    assert status == 413
    bomb = gzip.compress(b" " * (4 * LIMIT))
    assert len(bomb) < LIMIT
    headers = {"content-encoding": "gzip"}
    status, body, _ = await post(
        http, open_gateway, "/v2/repository/index", data=bomb, headers=headers
    )
    assert status == 413 and "decoded" in body["error"]
    packed = gzip.compress(b'{"ready": true}')
    status, rows, _ = await post(
        http, open_gateway, "/v2/repository/index", data=packed, headers=headers
    )
    assert status == 200 and rows
    status, body, _ = await post(
        http, open_gateway, "/v2/repository/index", data=b"xx", headers={"content-encoding": "br"}
    )
    assert status == 501 and "gzip" in body["error"]
    status, body, _ = await post(
        http, open_gateway, "/v2/repository/index", data=b"xx", headers=headers
    )
    assert status == 400


async def test_auth_scopes_allow_lists_and_rate_limits(
    keyed_gateway: GatewayServer, http: aiohttp.ClientSession
) -> None:
    gw = keyed_gateway
    status, body, response = await get(http, gw, "/v2/models/pair")
    assert status == 401 and "Bearer" in body["error"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await get(http, gw, "/v2/health/ready", headers=bearer("wrong")))[0] == 401
    assert (await get(http, gw, "/v2/health/ready", headers=bearer("key-all")))[0] == 200

    status, body, _ = await get(http, gw, "/v2/models/pair", headers=bearer("key-other"))
    assert status == 403 and "pair" in body["error"]
    status, body, _ = await get(http, gw, "/v2/models/pair", headers=bearer("key-infer"))
    assert status == 403
    status, body, _ = await post(http, gw, "/v2/repository/index", headers=bearer("key-infer"))
    assert status == 403
    assert (await get(http, gw, "/v2/models/other", headers=bearer("key-other")))[0] == 200

    # Calls about every model are cut to the key's allow-list.
    status, every, _ = await get(http, gw, "/v2/models/stats", headers=bearer("key-other"))
    assert status == 200 and {s["name"] for s in every["model_stats"]} == {"other"}
    status, every, _ = await get(http, gw, "/v2/models/stats", headers=bearer("key-all"))
    assert {s["name"] for s in every["model_stats"]} == {"pair", "other"}
    status, rows, _ = await post(http, gw, "/v2/repository/index", headers=bearer("key-other"))
    assert status == 200 and {r["name"] for r in rows} == {"other"}

    assert (await get(http, gw, "/v2", headers=bearer("key-slow")))[0] == 200
    status, body, response = await get(http, gw, "/v2", headers=bearer("key-slow"))
    assert status == 429 and "rate limit" in body["error"]
    # One token at 0.001 per second: about 1000 s until the next call may pass.
    assert 990 <= int(response.headers["retry-after"]) <= 1000


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status_line.encode(), headers, body


async def test_keep_alive_and_header_limits(open_gateway: GatewayServer) -> None:
    """Two requests answered on one connection; oversized headers close it."""
    reader, writer = await asyncio.open_connection("localhost", open_gateway.http_port)
    try:
        for path in ("/v2/health/live", "/v2"):
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            status, headers, _ = await asyncio.wait_for(read_response(reader), 10)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert headers.get("connection", "keep-alive") != "close"
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("localhost", open_gateway.http_port)
    try:
        limit = 2 * open_gateway.settings.max_metadata_bytes
        writer.write(b"GET /v2 HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * limit + b"\r\n\r\n")
        status, _, _ = await asyncio.wait_for(read_response(reader), 10)
        assert status.startswith(b"HTTP/1.1 431")
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_unsent_headers_time_out(
    start_inference: StartInference, start_gateway: StartGateway
) -> None:
    """A connection that never finishes its headers is closed (slowloris), but an idle
    keep-alive connection is not: it waits for its next request as keep-alive allows."""
    backend = await start_inference()
    gateway = await start_gateway(
        backends=backend_address(backend), http_header_timeout_seconds=0.2
    )
    reader, writer = await asyncio.open_connection("localhost", gateway.http_port)
    try:
        writer.write(b"GET /v2 HTTP/1.1\r\nhost: x\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("localhost", gateway.http_port)
    try:
        writer.write(b"GET /v2 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_response(reader), 10))[0].startswith(b"HTTP/1.1 200")
        # Idle for twice the header timeout: still open.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.4)
        pad = b"p" * (2 * gateway.settings.max_metadata_bytes)
        writer.write(b"GET /v2 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_response(reader), 10))[0].startswith(b"HTTP/1.1 200")
        # The next request's headers are held to the size cap too.
        writer.write(b"GET /v2 HTTP/1.1\r\nhost: x\r\nx-pad: " + pad + b"\r\n\r\n")
        assert (await asyncio.wait_for(read_response(reader), 10))[0].startswith(b"HTTP/1.1 431")
    finally:
        writer.close()


async def test_http_port_in_use_names_its_flag(
    start_inference: StartInference, start_gateway: StartGateway
) -> None:
    backend = await start_inference()
    first = await start_gateway(backends=backend_address(backend))
    with pytest.raises(PortInUse) as caught:
        await start_gateway(backends=backend_address(backend), http_port=first.http_port)
    assert "--http-port" in str(caught.value) and "MAAS_GATEWAY_HTTP_PORT" in str(caught.value)
    _, writer = await asyncio.open_connection("localhost", first.http_port)  # still serving
    writer.close()


async def test_versions_resolve_through_the_registry(
    registry: RegistryServer,
    pair_in_registry: RegistryClient,
    start_following: Callable[..., Awaitable[InferenceServer]],
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """An alias in the path is resolved by the registry, as on gRPC."""
    backend = await start_following()
    gateway = await start_gateway(
        registry=registry_address(registry),
        registry_token=READER,
        backends=backend_address(backend),
        ready_wait_seconds=10,
    )
    path = "/v2/models/pair/versions/production/stats"
    status, stats, _ = await get(http, gateway, path)
    assert status == 200, stats
    assert [s["version"] for s in stats["model_stats"]] == ["1"]
    status, body, _ = await get(http, gateway, "/v2/models/pair/versions/no-alias/config")
    assert status == 404 and "no-alias" in body["error"]
    status, body, _ = await get(http, gateway, "/v2/models/absent")
    assert status == 404 and "absent" in body["error"]


async def test_shutdown_stops_the_http_listener(
    start_inference: StartInference, start_gateway: StartGateway
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(backends=backend_address(backend))
    reader, writer = await asyncio.open_connection("localhost", gateway.http_port)
    writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(reader), 10))[0].startswith(b"HTTP/1.1 200")
    await gateway.shutdown(1)
    assert gateway.app.draining and not gateway.app.ready()
    # The idle keep-alive connection is closed, and no new one is taken.
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("localhost", gateway.http_port)
