"""Concurrent uploads to one model get distinct, increasing versions; none is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.registry.domain import Event
from tests.integration.registry.conftest import StartRegistry
from tests.unit.registry.registry_onnx import add_model, save


async def test_twenty_concurrent_uploads(
    start_registry: StartRegistry, database_url: str | None, tmp_path: Path
) -> None:
    registry = await start_registry(database_url=database_url)
    paths = [save(add_model(bias=i), tmp_path / f"m{i}.onnx") for i in range(20)]
    # Two identical files among them: stored once, referenced twice.
    paths.append(paths[0])
    async with registry.client() as client:
        made = await asyncio.gather(*(client.upload("shared", p) for p in paths))
        numbers = sorted(v.version for v in made)
        assert numbers == list(range(1, 22))
        listed = await client.list_versions("shared")
        assert [v.version for v in listed.items] == numbers
        by_sha = {v.sha256 for v in listed.items}
        assert len(by_sha) == 20
        events = [e async for e in _take(client.watch(0), 22)]
        assert [e.revision for e in events] == list(range(1, 23))
    blobs = list((registry.settings.data_dir / "blobs" / "sha256").rglob("*/*"))
    assert len(blobs) == 20


async def _take(stream: AsyncIterator[Event], count: int) -> AsyncIterator[Event]:
    async for event in stream:
        yield event
        count -= 1
        if not count:
            return
