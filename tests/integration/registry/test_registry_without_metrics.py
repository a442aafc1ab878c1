"""A registry built without metrics (no observe()) still takes uploads and deletes."""

from __future__ import annotations

from pathlib import Path

from services.common.server import GrpcServer
from services.registry.app import Registry
from services.registry.client import RegistryClient
from services.registry.servicer import ModelRegistryServicer
from services.registry.settings import RegistrySettings


async def test_upload_and_delete_without_metrics(tmp_path: Path, test_models: Path) -> None:
    settings = RegistrySettings(
        data_dir=tmp_path / "data", host="localhost", port=0, metrics_port=0, no_auth=True
    )
    registry = await Registry.open(settings)
    server = GrpcServer(
        settings,
        bindings=[ModelRegistryServicer(registry).binding()],
        on_shutdown=[registry.close],
    )
    port = await server.start()
    try:
        async with RegistryClient(f"localhost:{port}", None) as client:
            version = await client.upload("pair", test_models / "pair" / "1" / "model.onnx")
            assert version.version == 1
            await client.delete_version("pair", 1)
    finally:
        await server.shutdown(0)
