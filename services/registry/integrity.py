"""The integrity check: every row has its blob, every blob its row."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.common.files import sha256_of
from services.registry.blobs import BlobStore
from services.registry.store import MetadataStore


@dataclass(frozen=True)
class MissingBlob:
    """A version file whose blob is absent."""

    model: str
    version: int
    path: str
    sha256: str


@dataclass(frozen=True)
class IntegrityReport:
    """What the integrity check found; `ok` when nothing."""

    files: int
    blobs: int
    missing: list[MissingBlob] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No missing, orphaned or corrupt blob.

        Staging entries are listed but harmless: uploads in progress, or leftovers
        of a crash that the next start removes.
        """
        return not (self.missing or self.orphans or self.corrupt)


async def check_integrity(
    store: MetadataStore, blobs: BlobStore, *, verify_hashes: bool = False
) -> IntegrityReport:
    """Compare the store's file rows with the blobs; read-only."""
    files = await store.all_files()
    stored = set(await asyncio.to_thread(blobs.list))
    referenced = {f.sha256 for _, _, f in files}
    missing = [
        MissingBlob(model, version, f.path, f.sha256)
        for model, version, f in files
        if f.sha256 not in stored
    ]
    corrupt = []
    if verify_hashes:
        for sha in sorted(stored & referenced):
            if await asyncio.to_thread(_digest, blobs, sha) != sha:
                corrupt.append(sha)
    return IntegrityReport(
        files=len(files),
        blobs=len(stored),
        missing=missing,
        orphans=sorted(stored - referenced),
        corrupt=corrupt,
        staging=await asyncio.to_thread(blobs.staging_entries),
    )


def _digest(blobs: BlobStore, sha: str) -> str:
    with blobs.open(sha) as handle:
        return sha256_of(handle)[0]
