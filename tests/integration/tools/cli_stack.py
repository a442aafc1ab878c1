"""Real servers for the `maas` command tests: inference over a repository and a
gateway in front, both on port 0 in this process; the command runs in a thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.gateway.main import GatewayServer
from services.gateway.settings import GatewaySettings
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tools import cli


@contextlib.asynccontextmanager
async def serving(repository: Path, **gateway: Any) -> AsyncIterator[str]:
    """The gateway's address, in front of inference over `repository`; `gateway`
    overrides its settings (api_keys=... turns auth on)."""
    inference = InferenceServer(
        InferenceSettings(
            port=0,
            metrics_port=0,
            host="localhost",
            model_repository=str(repository),
            grace_seconds=0,
        )
    )
    await inference.start()
    gateway = GatewayServer(
        GatewaySettings(
            port=0,
            metrics_port=0,
            http_port=0,
            host="localhost",
            grace_seconds=0,
            no_auth="api_keys" not in gateway,
            backends=f"localhost:{inference.grpc.port}",
            **gateway,
        )
    )
    try:
        await gateway.start(ready_timeout=30)
        yield f"localhost:{gateway.grpc.port}"
    finally:
        await gateway.shutdown(0)
        await inference.shutdown(0)


async def maas(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> tuple[int, str, str]:
    """`maas ARGS` in a thread (it runs its own event loop): exit code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err
