"""Blob garbage collection: blobs no version uses, safe while uploads are in flight.

An upload stores its files first and inserts its version afterwards, under the
blob lock, after checking that the files are still there (storing them again if
not). So the collector needs only two rules to never break a version:
- it deletes under the blob lock, after reading which blobs rows reference, so a
  version committed before is seen and one committed after finds its blob gone
  and stores it again;
- it leaves blobs younger than the grace period alone, and multipart uploads begun
  within it, so an upload in flight on any replica is not made to start over.
Listing the store happens outside the lock: it can be long, and the lock holds up
every replica's commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.registry.blobs import BlobStore
from services.registry.store import MetadataStore
from services.registry.store.locks import BlobLock

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcReport:
    """What one collection did."""

    collected: list[str] = field(default_factory=list)
    young: int = 0
    aborted: list[str] = field(default_factory=list)


class BlobCollector:
    """Collects unreferenced blobs older than `grace_seconds` (and stale multipart uploads)."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        lock: BlobLock,
        *,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.lock = lock
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.collected_total = 0
        self.on_collected: Callable[[int], None] | None = None

    async def collect(self) -> GcReport:
        """One pass; its report."""
        cutoff = self.clock() - self.grace_seconds
        stored = await asyncio.to_thread(self.blobs.stored)
        old = {blob.sha256 for blob in stored if blob.modified <= cutoff}
        collected: list[str] = []
        if old:
            async with self.lock:
                referenced = await self.store.referenced_blobs()
                for sha in sorted(old - referenced):
                    await asyncio.to_thread(self.blobs.delete, sha)
                    collected.append(sha)
        aborted = await asyncio.to_thread(self.blobs.abort_incomplete, cutoff)
        self.collected_total += len(collected)
        if collected and self.on_collected is not None:
            self.on_collected(len(collected))
        if collected or aborted:
            _log.info(
                "collected blob garbage",
                extra={"blobs_collected": len(collected), "uploads_aborted": len(aborted)},
            )
        return GcReport(collected, len(stored) - len(old), aborted)

    async def run_every(self, interval: float) -> None:
        """Collect every `interval` seconds until cancelled; a failed pass is logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect()
            except Exception:
                _log.exception("blob garbage collection failed; retrying at the next interval")
