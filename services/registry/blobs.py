"""Content-addressed artifact storage, behind a small interface.

The filesystem store keeps each file at `blobs/sha256/ab/abcdef...`; identical
content is stored once. Uploads are staged under `tmp/` on the same filesystem,
fsynced, and renamed into place, so a blob is either whole or absent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from services.common.files import fsync_dir
from services.registry.names import SHA256_HEX

STAGING_PREFIX = "upload-"


class BlobStore(Protocol):
    """Where version files live, addressed by their sha256."""

    def new_staging_dir(self) -> Path:
        """A fresh, empty local directory to receive an upload in."""
        ...

    def discard_staging_dir(self, path: Path) -> None:
        """Remove a staging directory and everything in it."""
        ...

    def clean_staging(self) -> list[str]:
        """Remove every staging leftover (after a crash); return what was removed."""
        ...

    def staging_entries(self) -> list[str]:
        """Staging leftovers, without removing them."""
        ...

    def put(self, source: Path, sha256: str) -> None:
        """Store the fsynced file `source` (consumed) as blob `sha256`; dedup."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether blob `sha256` is stored."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """Open blob `sha256` for reading; FileNotFoundError if absent."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove blob `sha256` if present."""
        ...

    def list(self) -> list[str]:
        """The sha256 of every stored blob."""
        ...


class FilesystemBlobStore:
    """Blobs as files under `root`: `sha256/ab/<hex>`, staging under `tmp/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where blob `sha256` lives."""
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self._blobs / sha256[:2] / sha256

    def new_staging_dir(self) -> Path:
        path = self._tmp / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def discard_staging_dir(self, path: Path) -> None:
        if path.parent == self._tmp:
            shutil.rmtree(path, ignore_errors=True)

    def staging_entries(self) -> list[str]:
        return sorted(p.name for p in self._tmp.iterdir())

    def clean_staging(self) -> list[str]:
        removed = self.staging_entries()
        for name in removed:
            entry = self._tmp / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return removed

    def put(self, source: Path, sha256: str) -> None:
        dest = self.path(sha256)
        if dest.exists():
            source.unlink(missing_ok=True)
            return
        created = not dest.parent.exists()
        dest.parent.mkdir(exist_ok=True)
        os.replace(source, dest)
        fsync_dir(dest.parent)
        if created:
            fsync_dir(self._blobs)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")

    def delete(self, sha256: str) -> None:
        path = self.path(sha256)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def list(self) -> list[str]:
        found: list[str] = []
        for shard in self._blobs.iterdir():
            if shard.is_dir():
                found.extend(p.name for p in shard.iterdir() if SHA256_HEX.fullmatch(p.name))
        return sorted(found)


async def read_chunks(handle: BinaryIO, chunk_size: int) -> AsyncIterator[bytes]:
    """The contents of an open file in chunks, read off the event loop."""
    while True:
        data = await asyncio.to_thread(handle.read, chunk_size)
        if not data:
            return
        yield data
