"""The demo chat model (tools/demo/smollm2.py) behind a real gateway, for the tests of
the generate extension and the OpenAI-compatible routes."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.conftest import StartGateway, backend_address
from tests.integration.inference.generate_models import smollm2_dir


async def start_chat(
    start_inference_at: StartInferenceAt, start_gateway: StartGateway, tmp_path: Path, keys: str
) -> tuple[InferenceServer, GatewayServer]:
    """An inference server on the built smollm2 (its version linked, its own config) and a
    gateway in front of it with the keys file `keys` (YAML)."""
    root = tmp_path / "repository"
    (root / "smollm2").mkdir(parents=True)
    (root / "smollm2" / "1").symlink_to(smollm2_dir() / "1", target_is_directory=True)
    shutil.copy(smollm2_dir() / "config.yaml", root / "smollm2" / "config.yaml")
    backend = await start_inference_at(root)
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys)
    gateway = await start_gateway(backends=backend_address(backend), api_keys_file=str(keys_file))
    return backend, gateway
