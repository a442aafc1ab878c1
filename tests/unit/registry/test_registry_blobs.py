"""The filesystem blob store, staging cleanup, garbage collection and the integrity check."""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.registry.blobs import FilesystemBlobStore
from services.registry.domain import FileInfo, NewVersion, Signature
from services.registry.gc import BlobCollector
from services.registry.integrity import check_integrity
from services.registry.store import SqlStore
from services.registry.store.locks import LocalBlobLock


def staged_file(blobs: FilesystemBlobStore, data: bytes) -> tuple[Path, str]:
    path = blobs.new_staging_dir() / "f"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path)
    first, sha = staged_file(blobs, b"hello")
    blobs.put(first, sha)
    assert blobs.path(sha) == tmp_path / "sha256" / sha[:2] / sha
    assert first.exists()  # left in place for a re-put; staging cleanup removes it
    second, _ = staged_file(blobs, b"hello")
    blobs.put(second, sha)
    assert blobs.path(sha).stat().st_ino == first.stat().st_ino  # stored once
    assert blobs.list() == [sha]
    with blobs.open(sha) as handle:
        assert handle.read() == b"hello"
    blobs.delete(sha)
    assert blobs.list() == []


async def test_recover_and_check(store: SqlStore, tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    kept, kept_sha = staged_file(blobs, b"kept")
    blobs.put(kept, kept_sha)
    orphan, orphan_sha = staged_file(blobs, b"orphan")
    blobs.put(orphan, orphan_sha)
    leftover = blobs.new_staging_dir() / "partial"
    leftover.write_bytes(b"half an upload")
    await store.add_version(NewVersion("m", (FileInfo("model.onnx", kept_sha, 4),), Signature()))
    missing = "0" * 64
    await store.add_version(NewVersion("m", (FileInfo("model.onnx", missing, 1),), Signature()))

    report = await check_integrity(store, blobs, verify_hashes=True)
    assert not report.ok
    assert report.orphans == [orphan_sha]
    assert [(m.model, m.version, m.sha256) for m in report.missing] == [("m", 2, missing)]
    assert len(report.staging) == 3

    assert len(blobs.clean_staging()) == 3
    collector = BlobCollector(store, blobs, LocalBlobLock(), grace_seconds=0)
    assert (await collector.collect()).collected == [orphan_sha]
    await store.delete_version("m", 2)
    report = await check_integrity(store, blobs, verify_hashes=True)
    assert report.ok, report
    assert (report.files, report.blobs) == (1, 1)


async def test_check_finds_corruption(store: SqlStore, tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    path, sha = staged_file(blobs, b"data")
    blobs.put(path, sha)
    await store.add_version(NewVersion("m", (FileInfo("model.onnx", sha, 4),), Signature()))
    blobs.path(sha).write_bytes(b"DATA")
    assert (await check_integrity(store, blobs)).ok
    assert (await check_integrity(store, blobs, verify_hashes=True)).corrupt == [sha]
