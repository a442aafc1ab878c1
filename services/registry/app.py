"""The registry's application layer: plain Python, no grpc; returns domain objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from services.common.errors import Aborted, InvalidArgument
from services.common.telemetry import AttributeValue, Tracing
from services.common.versions import is_number
from services.registry import names
from services.registry.blobs import BlobStore, blob_store_for, read_chunks
from services.registry.domain import (
    AliasChange,
    Event,
    FileInfo,
    Model,
    NewVersion,
    Page,
    Snapshot,
    Version,
    VersionState,
)
from services.registry.gc import BlobCollector
from services.registry.metrics import RegistryMetrics
from services.registry.settings import RegistrySettings
from services.registry.store import MetadataStore, create_store
from services.registry.store.locks import BlobLock, LocalBlobLock
from services.registry.uploads import UploadPart, receive
from services.registry.validation import validate_model
from services.registry.watch import WatchHub

_log = logging.getLogger(__name__)


@dataclass
class Download:
    """An open version: its files are held open, so a concurrent delete cannot cut it short."""

    version: Version
    handles: list[tuple[FileInfo, BinaryIO]]

    async def chunks(self, chunk_size: int) -> AsyncIterator[tuple[str, bytes]]:
        """(file path, data) pairs, file after file."""
        for info, handle in self.handles:
            async for data in read_chunks(handle, chunk_size):
                yield info.path, data

    def close(self) -> None:
        """Release the files."""
        for _, handle in self.handles:
            handle.close()


class Registry:
    """Models, versions, aliases, uploads, downloads and the change feed."""

    def __init__(
        self,
        settings: RegistrySettings,
        store: MetadataStore,
        blobs: BlobStore,
        hub: WatchHub,
        lock: BlobLock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.hub = hub
        self.metrics: RegistryMetrics | None = None
        self.tracing = Tracing()
        # Orders "blob stored + version inserted" against "version deleted + blob deleted"
        # (and the garbage collector), in this process and, on PostgreSQL, across
        # replicas: a blob that an upload just deduplicated against is never removed.
        self._blob_lock = lock or LocalBlobLock()
        self.gc = BlobCollector(
            store, blobs, self._blob_lock, grace_seconds=settings.gc_grace_seconds
        )
        self._gc_task: asyncio.Task[None] | None = None

    def observe(self, metrics: RegistryMetrics, tracing: Tracing) -> None:
        """Report to these metrics and trace with this tracer."""
        self.metrics = metrics
        self.tracing = tracing
        metrics.track_subscribers(lambda: self.hub.subscriber_count)
        metrics.blobs_collected.inc(self.gc.collected_total)
        self.gc.on_collected = metrics.blobs_collected.inc

    @classmethod
    async def open(cls, settings: RegistrySettings) -> Registry:
        """Open the stores, clean up after any crash, and start the change feed and GC."""
        blobs = blob_store_for(
            settings.blob_url, settings.data_dir, endpoint_url=settings.s3_endpoint_url
        )
        await asyncio.to_thread(blobs.check)
        store = create_store(settings.database(), settings.data_dir, history=settings.watch_history)
        await store.open()
        lock = store.backend.blob_lock()
        # Only this replica's own staging area: other replicas' uploads are elsewhere.
        removed = await asyncio.to_thread(blobs.clean_staging)
        if removed:
            _log.info("removed staging leftovers of an unclean stop", extra={"count": len(removed)})
        hub = WatchHub(
            store,
            queue_size=settings.watch_queue_size,
            poll_seconds=settings.watch_poll_seconds,
            bookmark_seconds=settings.watch_bookmark_seconds,
        )
        await hub.start()
        registry = cls(settings, store, blobs, hub, lock)
        await registry._start_gc()
        return registry

    async def _start_gc(self) -> None:
        try:
            await self.gc.collect()
        except Exception:
            _log.exception("blob garbage collection at start failed; serving anyway")
        if self.settings.gc_interval_seconds > 0:
            self._gc_task = asyncio.create_task(
                self.gc.run_every(self.settings.gc_interval_seconds)
            )

    async def close(self) -> None:
        """Stop the collector, end watches, then close the store and the lock."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            await asyncio.gather(self._gc_task, return_exceptions=True)
        await self.hub.close()
        await self._blob_lock.close()
        await self.store.close()

    # Models.

    async def create_model(self, name: str, description: str, labels: dict[str, str]) -> Model:
        model = await self.store.create_model(
            names.model_name(name), names.description(description), names.labels(labels)
        )
        self.hub.notify()
        return model

    async def get_model(self, name: str) -> Model:
        return await self.store.get_model(names.model_name(name))

    async def list_models(self, *, page_size: int, page_token: str, prefix: str) -> Page[Model]:
        limit = names.page_size(page_size)
        after = names.decode_page_token("models", page_token)
        models, revision = await self.store.list_models(prefix=prefix, after=after, limit=limit + 1)
        token = (
            names.encode_page_token("models", models[limit - 1].name) if len(models) > limit else ""
        )
        return Page(models[:limit], token, revision)

    async def delete_model(self, name: str) -> None:
        async with self._blob_lock:
            released = await self.store.delete_model(names.model_name(name))
            await self._delete_blobs(released)
        self.hub.notify()

    # Versions.

    async def upload(self, parts: AsyncIterator[UploadPart]) -> Version:
        """Receive, verify and validate an upload, then make it visible atomically."""
        settings = self.settings
        staging = await asyncio.to_thread(self.blobs.new_staging_dir)
        result = "failed"
        try:
            try:
                meta, files = await receive(parts, staging, max_bytes=settings.max_model_bytes)
                sizes = {f.path: f.size_bytes for f in files}
                attributes: dict[str, AttributeValue] = {
                    "maas.model": meta.model,
                    "maas.upload_bytes": sum(sizes.values()),
                }
                with self.tracing.span("registry.validate", attributes):
                    facts = await asyncio.to_thread(
                        validate_model,
                        staging,
                        sizes,
                        opset_min=settings.opset_min,
                        opset_max=settings.opset_max,
                    )
            except InvalidArgument:
                result = "rejected"
                raise
            new = NewVersion(
                model=meta.model,
                files=files,
                signature=facts.signature,
                description=meta.description,
                labels=dict(meta.labels),
                config=meta.config,
                opset=facts.opset,
                ir_version=facts.ir_version,
                alias=meta.alias,
            )
            version = await self._commit(staging, new)
            result = "ok"
            if self.metrics is not None:
                self.metrics.upload_bytes.inc(sum(sizes.values()))
        finally:
            if self.metrics is not None:
                self.metrics.uploads.labels(result).inc()
            await asyncio.to_thread(self.blobs.discard_staging_dir, staging)
        self.hub.notify()
        _log.info(
            "version added",
            extra={"model": version.model, "version": version.version, "sha256": version.sha256},
        )
        return version

    async def _commit(self, staging: Path, new: NewVersion) -> Version:
        # Storing can be long (a multipart upload to S3): it happens outside the lock,
        # and a GC or delete on any replica may remove a blob before the lock is ours.
        for f in new.files:
            await asyncio.to_thread(self.blobs.put, staging / f.path, f.sha256)
        async with self._blob_lock:
            for f in new.files:
                if not await asyncio.to_thread(self.blobs.exists, f.sha256):
                    await asyncio.to_thread(self.blobs.put, staging / f.path, f.sha256)
            # The insert runs to its end even if the caller goes away, so that the
            # cleanup below never races a commit that is still in flight.
            insert = asyncio.ensure_future(self.store.add_version(new))
            try:
                return await asyncio.shield(insert)
            except asyncio.CancelledError:
                await asyncio.wait([insert])
                if insert.cancelled() or insert.exception() is not None:
                    await self._release(new)
                raise
            except Exception:
                await self._release(new)
                raise

    async def _release(self, new: NewVersion) -> None:
        released = await self.store.unreferenced({f.sha256 for f in new.files})
        await self._delete_blobs(released)

    async def get_version(self, model: str, version: int) -> Version:
        return await self.store.get_version(names.model_name(model), names.version_number(version))

    async def list_versions(
        self, model: str, *, page_size: int, page_token: str, state: VersionState | None
    ) -> Page[Version]:
        limit = names.page_size(page_size)
        token_key = names.decode_page_token("versions", page_token)
        if token_key is not None and not is_number(token_key):
            raise InvalidArgument("invalid page_token: not from a versions listing")
        after = int(token_key) if token_key else 0
        versions, revision = await self.store.list_versions(
            names.model_name(model), after=after, limit=limit + 1, state=state
        )
        more = len(versions) > limit
        token = (
            names.encode_page_token("versions", str(versions[limit - 1].version)) if more else ""
        )
        return Page(versions[:limit], token, revision)

    async def archive_version(self, model: str, version: int) -> Version:
        archived = await self.store.archive_version(
            names.model_name(model), names.version_number(version)
        )
        self.hub.notify()
        return archived

    async def delete_version(self, model: str, version: int) -> None:
        async with self._blob_lock:
            released = await self.store.delete_version(
                names.model_name(model), names.version_number(version)
            )
            await self._delete_blobs(released)
        self.hub.notify()

    async def open_download(self, model: str, selector: str) -> Download:
        """Resolve and open a version's files for streaming; close() the result."""
        version = await self.resolve(model, selector)
        handles: list[tuple[FileInfo, BinaryIO]] = []
        try:
            for f in version.files:
                handles.append((f, await asyncio.to_thread(self.blobs.open, f.sha256)))
        except FileNotFoundError:
            for _, handle in handles:
                handle.close()
            raise Aborted(
                f"version {version.version} of '{model}' was deleted while opening it; retry"
            ) from None
        return Download(version, handles)

    # Aliases, resolution, snapshot, watch.

    async def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        change = await self.store.set_alias(
            names.model_name(model), names.alias_name(alias), names.version_number(version)
        )
        self.hub.notify()
        return change

    async def delete_alias(self, model: str, alias: str) -> None:
        await self.store.delete_alias(names.model_name(model), names.alias_name(alias))
        self.hub.notify()

    async def resolve(self, model: str, selector: str) -> Version:
        return await self.store.resolve(names.model_name(model), names.selector(selector))

    async def snapshot(self, model: str) -> Snapshot:
        return await self.store.snapshot(names.model_name(model) if model else None)

    def watch(self, since: int | None, model: str) -> AsyncIterator[Event]:
        """The change feed after `since` (None: from now), optionally for one model."""
        return self.hub.subscribe(since, names.model_name(model) if model else "")

    async def _delete_blobs(self, shas: list[str]) -> None:
        for sha in shas:
            await asyncio.to_thread(self.blobs.delete, sha)
