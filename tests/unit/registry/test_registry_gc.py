"""Blob garbage collection on the filesystem store: the grace period and the rows."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from services.registry.blobs import FilesystemBlobStore
from services.registry.domain import FileInfo, NewVersion, Signature
from services.registry.gc import BlobCollector
from services.registry.store import SqlStore
from services.registry.store.locks import LocalBlobLock


def put(blobs: FilesystemBlobStore, data: bytes) -> str:
    path = blobs.new_staging_dir() / "f"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    blobs.put(path, sha)
    return sha


async def test_only_unreferenced_blobs_older_than_the_grace_go(
    store: SqlStore, tmp_path: Path
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    kept = put(blobs, b"a version's file")
    orphan = put(blobs, b"stored, never committed")
    await store.add_version(NewVersion("m", (FileInfo("model.onnx", kept, 16),), Signature()))
    later = time.time() + 7200
    collector = BlobCollector(store, blobs, LocalBlobLock(), grace_seconds=3600)
    counted: list[int] = []
    collector.on_collected = counted.append

    young = await collector.collect()
    assert (young.collected, young.young) == ([], 2)
    assert sorted(blobs.list()) == sorted([kept, orphan])

    collector.clock = lambda: later
    old = await collector.collect()
    assert (old.collected, old.young, old.aborted) == ([orphan], 0, [])
    assert blobs.list() == [kept]
    assert (counted, collector.collected_total) == ([1], 1)
    assert (await collector.collect()).collected == []  # the version's blob, never
