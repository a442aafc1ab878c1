"""Content-addressed artifact storage, behind a small interface.

Blobs live at `sha256/ab/abcdef...` (on a filesystem, or in an S3 bucket: see
`blobs_s3`); identical content is stored once. Uploads are staged in a local
directory first, since validation needs the file on disk and its sha256 must be
verified before anything lands at its content address.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from services.common.files import fsync_dir
from services.registry.names import SHA256_HEX

STAGING_PREFIX = "upload-"


@dataclass(frozen=True)
class StoredBlob:
    """A blob and when it was written (seconds since the epoch)."""

    sha256: str
    modified: float


class BlobStore(Protocol):
    """Where version files live, addressed by their sha256."""

    @property
    def kind(self) -> str:
        """Where: "filesystem" or "s3"."""
        ...

    def check(self) -> None:
        """ValueError, naming what is wrong, if the store cannot be used."""
        ...

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
        """Store the fsynced local file `source` as blob `sha256` unless it is stored
        already; `source` stays in place (its staging directory is discarded later)."""
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

    def stored(self) -> list[StoredBlob]:
        """Every stored blob with the time it was written."""
        ...

    def abort_incomplete(self, before: float) -> list[str]:
        """Abort writes begun before `before` and never finished; what was aborted."""
        ...

    def list(self) -> list[str]:
        """The sha256 of every stored blob."""
        ...


class LocalStaging:
    """Upload staging directories under `root` (one per upload, `upload-<uuid>`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new_staging_dir(self) -> Path:
        path = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def discard_staging_dir(self, path: Path) -> None:
        if path.parent == self.root:
            shutil.rmtree(path, ignore_errors=True)

    def staging_entries(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())

    def clean_staging(self) -> list[str]:
        removed = self.staging_entries()
        for name in removed:
            entry = self.root / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return removed


class FilesystemBlobStore(LocalStaging):
    """Blobs as files under `root`: `sha256/ab/<hex>`, staging under `tmp/`."""

    kind = "filesystem"

    def __init__(self, root: Path) -> None:
        super().__init__(root / "tmp")
        self._blobs = root / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)

    def check(self) -> None:
        return None

    def path(self, sha256: str) -> Path:
        """Where blob `sha256` lives."""
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self._blobs / sha256[:2] / sha256

    def put(self, source: Path, sha256: str) -> None:
        dest = self.path(sha256)
        if dest.exists():
            return
        created = not dest.parent.exists()
        dest.parent.mkdir(exist_ok=True)
        # A hard link is atomic like a rename, and keeps the staged file for a re-put.
        try:
            os.link(source, dest)
        except FileExistsError:
            return
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

    def stored(self) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        for shard in self._blobs.iterdir():
            if not shard.is_dir():
                continue
            for p in shard.iterdir():
                if SHA256_HEX.fullmatch(p.name):
                    try:
                        found.append(StoredBlob(p.name, p.stat().st_mtime))
                    except FileNotFoundError:
                        continue
        return found

    def abort_incomplete(self, before: float) -> list[str]:
        # A file blob appears whole by one link; nothing is ever half-written in place.
        return []

    def list(self) -> list[str]:
        return sorted(blob.sha256 for blob in self.stored())


def blob_store_for(blob_url: str, data_dir: Path, *, endpoint_url: str | None) -> BlobStore:
    """The store `blob_url` names: files under `data_dir`/blobs when empty, else S3.

    Uploads are staged under `data_dir`/blobs/tmp in both cases (local to the replica).
    """
    if not blob_url:
        return FilesystemBlobStore(data_dir / "blobs")
    try:
        from services.registry.blobs_s3 import S3BlobStore, parse_blob_url
    except ImportError:
        raise ValueError("an s3:// blob_url needs boto3: pip install 'maas[s3]'") from None
    bucket, prefix = parse_blob_url(blob_url)
    return S3BlobStore(bucket, prefix, data_dir / "blobs" / "tmp", endpoint_url=endpoint_url)


async def read_chunks(handle: BinaryIO, chunk_size: int) -> AsyncIterator[bytes]:
    """The contents of an open file in chunks, read off the event loop."""
    while True:
        data = await asyncio.to_thread(handle.read, chunk_size)
        if not data:
            return
        yield data
