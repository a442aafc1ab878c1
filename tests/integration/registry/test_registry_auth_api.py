"""Auth through a real server: UNAUTHENTICATED, PERMISSION_DENIED, and what readers may do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common.errors import PermissionDenied, Unauthenticated
from services.registry.domain import EventType
from services.registry.main import create_server
from services.registry.settings import RegistrySettings
from tests.integration.registry.conftest import READER, Running, StartRegistry
from tests.unit.registry.registry_onnx import add_model, save


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_missing_or_wrong_token(registry: Running, token: str | None) -> None:
    async with registry.client(token) as client:
        with pytest.raises(Unauthenticated):
            await client.list_models()
        with pytest.raises(Unauthenticated):
            await client.create_model("x")
        with pytest.raises(Unauthenticated):
            await anext(client.watch(0))


async def test_reader_reads_but_cannot_write(registry: Running, tmp_path: Path) -> None:
    path = save(add_model(), tmp_path / "m.onnx")
    async with registry.client() as admin:
        await admin.upload("m", path, alias="production")
    async with registry.client(READER) as reader:
        assert [m.name for m in (await reader.list_models()).items] == ["m"]
        assert (await reader.resolve("m")).version == 1
        await reader.download("m", "production", tmp_path / "out")
        assert (tmp_path / "out" / "model.onnx").read_bytes() == path.read_bytes()
        event = await asyncio.wait_for(anext(reader.watch(0)), 5)
        assert event.type is EventType.MODEL_CREATED
        with pytest.raises(PermissionDenied, match="has role reader: expected admin"):
            await reader.create_model("x")
        with pytest.raises(PermissionDenied):
            await reader.upload("m", path)
        with pytest.raises(PermissionDenied):
            await reader.set_alias("m", "canary", 1)
        with pytest.raises(PermissionDenied):
            await reader.delete_model("m")


async def test_no_auth_is_explicit(start_registry: StartRegistry, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokens configured"):
        await create_server(RegistrySettings(data_dir=tmp_path / "x", port=0, metrics_port=0))
    open_registry = await start_registry(admin_token=None, reader_token=None, no_auth=True)
    async with open_registry.client(None) as client:
        await client.create_model("anyone")


async def test_tokens_file(start_registry: StartRegistry, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  - {id: ci, role: admin, token: from-file}\n")
    registry = await start_registry(admin_token=None, reader_token=None, tokens_file=tokens)
    async with registry.client("from-file") as client:
        await client.create_model("ok")
