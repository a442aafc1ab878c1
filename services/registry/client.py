"""Async client of the model registry, for `maas models`, inference and the gateway.

Every call raises the `services.common.errors` class of the status it got, so
callers branch on the class (the status), never on message text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.common import errors
from services.common.backoff import WATCH_MAX_BACKOFF, next_backoff, reconnect_delay
from services.common.errors import error_from_rpc
from services.common.settings import MIB
from services.common.tls_client import DEFAULT_CHECK_SECONDS, ChannelSource, ClientTLS
from services.registry import convert
from services.registry.domain import (
    AliasChange,
    Event,
    EventType,
    Model,
    Page,
    Snapshot,
    Version,
    VersionState,
)
from services.registry.transfer import DownloadWriter, LocalFile, plan_upload, read_file_chunks
from services.registry.uploads import UploadMetadata

_log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[int], None]
CHUNK_BYTES = 1 * MIB
# Errors a watch gives up on; anything else is retried with backoff.
_FATAL = frozenset(
    {
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "UNIMPLEMENTED",
        "FAILED_PRECONDITION",
    }
)

# Reads are safe to repeat, so one that met a dying replica (UNAVAILABLE: the socket
# closed under it) is sent again; with a multi-address target (ipv4:A,B, pick_first)
# the retry goes to the survivor and the caller never sees the failover.
_READS = (
    "GetModel",
    "ListModels",
    "GetVersion",
    "ListVersions",
    "ResolveVersion",
    "GetSnapshot",
    "DownloadVersion",  # server streaming: retried only before its first message
)
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "maas.registry.v1.ModelRegistry", "method": method}
                    for method in _READS
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class RegistryClient:
    """A connection to one registry; use as `async with RegistryClient(addr, token) as c`."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        timeout: float | None = 60.0,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        tls: ClientTLS | None = None,
        tls_check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        self.address = address
        self.timeout = timeout
        # `interceptors` carry trace context (see services.common.telemetry); with `tls`
        # the channel is rebuilt when its CA or client cert files change.
        self._channels = ChannelSource(
            address,
            tls,
            options=[
                ("grpc.max_receive_message_length", 64 * MIB),
                ("grpc.max_send_message_length", 64 * MIB),
                ("grpc.service_config", _SERVICE_CONFIG),
                # A registry back after an outage is reached within seconds, not at
                # the end of gRPC's own reconnect backoff (up to 120 s by default).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", int(WATCH_MAX_BACKOFF * 1000)),
            ],
            interceptors=interceptors,
            check_seconds=tls_check_seconds,
        )
        self._generation = self._channels.generation
        self._stub_now = registry_pb2_grpc.ModelRegistryStub(self._channels.current())
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channels.close()

    @property
    def _stub(self) -> registry_pb2_grpc.ModelRegistryStub:
        """The stub on the current channel (a new one after the TLS files changed)."""
        channel = self._channels.current()
        if self._channels.generation != self._generation:
            self._generation = self._channels.generation
            self._stub_now = registry_pb2_grpc.ModelRegistryStub(channel)
        return self._stub_now

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    # Models.

    async def create_model(
        self, name: str, *, description: str = "", labels: dict[str, str] | None = None
    ) -> Model:
        request = pb.CreateModelRequest(name=name, description=description, labels=labels or {})
        return convert.model_from_pb(await self._unary(self._stub.CreateModel, request))

    async def get_model(self, name: str) -> Model:
        reply = await self._unary(self._stub.GetModel, pb.GetModelRequest(name=name))
        return convert.model_from_pb(reply)

    async def list_models_page(
        self, *, name_prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[Model]:
        """One page of models in name order."""
        request = pb.ListModelsRequest(
            name_prefix=name_prefix, page_size=page_size, page_token=page_token
        )
        reply = await self._unary(self._stub.ListModels, request)
        models = [convert.model_from_pb(m) for m in reply.models]
        return Page(models, reply.next_page_token, reply.revision)

    async def list_models(self, *, name_prefix: str = "") -> Page[Model]:
        """Every model; `revision` is the first page's, safe to Watch from."""
        return await _all_pages(
            lambda token: self.list_models_page(name_prefix=name_prefix, page_token=token)
        )

    async def delete_model(self, name: str) -> None:
        await self._unary(self._stub.DeleteModel, pb.DeleteModelRequest(name=name))

    # Versions.

    async def list_versions_page(
        self,
        model: str,
        *,
        state: VersionState | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Version]:
        """One page of a model's versions in increasing order."""
        request = pb.ListVersionsRequest(
            model=model,
            page_size=page_size,
            page_token=page_token,
            state=convert.state_to_pb(state) if state else pb.VERSION_STATE_UNSPECIFIED,
        )
        reply = await self._unary(self._stub.ListVersions, request)
        versions = [convert.version_from_pb(v) for v in reply.versions]
        return Page(versions, reply.next_page_token, reply.revision)

    async def list_versions(
        self, model: str, *, state: VersionState | None = None
    ) -> Page[Version]:
        """Every version of `model`."""
        return await _all_pages(
            lambda token: self.list_versions_page(model, state=state, page_token=token)
        )

    async def get_version(self, model: str, version: int) -> Version:
        request = pb.GetVersionRequest(model=model, version=version)
        return convert.version_from_pb(await self._unary(self._stub.GetVersion, request))

    async def resolve(self, model: str, version: str | int = "") -> Version:
        """The version a number, alias, "latest" or "" (production, else latest) names."""
        request = pb.ResolveVersionRequest(model=model, version=str(version))
        return convert.version_from_pb(await self._unary(self._stub.ResolveVersion, request))

    async def archive_version(self, model: str, version: int) -> Version:
        request = pb.ArchiveVersionRequest(model=model, version=version)
        return convert.version_from_pb(await self._unary(self._stub.ArchiveVersion, request))

    async def delete_version(self, model: str, version: int) -> None:
        request = pb.DeleteVersionRequest(model=model, version=version)
        await self._unary(self._stub.DeleteVersion, request)

    async def upload(
        self,
        model: str,
        path: Path | str,
        *,
        alias: str = "",
        config: str = "",
        description: str = "",
        labels: dict[str, str] | None = None,
        extra_files: dict[str, Path] | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Upload `path` as model.onnx plus its external data (found automatically
        unless `extra_files` maps version paths to local files)."""
        files = await asyncio.to_thread(plan_upload, Path(path), extra_files)
        return await self.upload_files(
            model,
            files,
            alias=alias,
            config=config,
            description=description,
            labels=labels,
            progress=progress,
        )

    async def upload_files(
        self,
        model: str,
        files: Sequence[LocalFile],
        *,
        alias: str = "",
        config: str = "",
        description: str = "",
        labels: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Upload planned files (see `transfer.plan_upload`); the first is model.onnx."""
        main = files[0]
        meta = UploadMetadata(
            model=model,
            sha256=main.sha256,
            size_bytes=main.size_bytes,
            description=description,
            labels=dict(labels or {}),
            extra_files=tuple(f.info for f in files[1:]),
            config=config,
            alias=alias,
        )
        requests = _upload_requests(meta, files, progress)
        try:
            reply = await self._stub.UploadVersion(requests, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.version_from_pb(reply)

    async def download(
        self,
        model: str,
        version: str | int,
        dest_dir: Path | str,
        *,
        progress: Progress | None = None,
    ) -> Version:
        """Download a version's files into `dest_dir`, verified, each written atomically."""
        request = pb.DownloadVersionRequest(model=model, version=str(version))
        writer: DownloadWriter | None = None
        try:
            async for reply in self._stub.DownloadVersion(request, metadata=self._metadata):
                if reply.WhichOneof("part") == "metadata":
                    writer = DownloadWriter(Path(dest_dir), convert.version_from_pb(reply.metadata))
                elif writer is None:
                    raise errors.Internal("download: file data arrived before the metadata")
                else:
                    await asyncio.to_thread(writer.write, reply.chunk.file, reply.chunk.data)
                    if progress is not None:
                        progress(len(reply.chunk.data))
            if writer is None:
                raise errors.Internal("download: the registry sent no metadata")
            await asyncio.to_thread(writer.commit)
            return writer.version
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            if writer is not None:
                await asyncio.to_thread(writer.abort)  # rmtree: off the event loop

    # Aliases, snapshot, watch.

    async def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        request = pb.SetAliasRequest(model=model, alias=alias, version=version)
        return convert.alias_change_from_pb(await self._unary(self._stub.SetAlias, request))

    async def delete_alias(self, model: str, alias: str) -> None:
        await self._unary(self._stub.DeleteAlias, pb.DeleteAliasRequest(model=model, alias=alias))

    async def snapshot(self, model: str = "") -> Snapshot:
        """Every model (or one) with all its versions, read at one revision."""
        reply = await self._unary(self._stub.GetSnapshot, pb.GetSnapshotRequest(model=model))
        return convert.snapshot_from_pb(reply)

    async def watch(
        self,
        since_revision: int | None = None,
        *,
        model: str = "",
        bookmarks: bool = False,
        min_backoff: float = 0.2,
        max_backoff: float = WATCH_MAX_BACKOFF,
    ) -> AsyncIterator[Event]:
        """Events after `since_revision` (None: from now), reconnecting as needed.

        After a disconnect it resumes from the last revision it saw, so nothing is
        missed. A RESYNC event means events were lost (history pruned, or this
        watcher was too slow): list again; the feed continues after its revision.
        BOOKMARK events only advance the revision and are yielded if `bookmarks`.
        """
        revision, backoff = since_revision, min_backoff
        while True:
            request = pb.WatchRequest(model=model)
            if revision is not None:
                request.since_revision = revision
            try:
                async for message in self._stub.Watch(request, metadata=self._metadata):
                    event = convert.event_from_pb(message)
                    revision, backoff = event.revision, min_backoff
                    if event.type is not EventType.BOOKMARK or bookmarks:
                        yield event
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                if error.status in _FATAL:
                    raise error from None
                _log.info("watch: reconnecting", extra={"status": error.status, "at": revision})
            await asyncio.sleep(reconnect_delay(backoff, random.random()))
            backoff = next_backoff(backoff, max_backoff)


async def _upload_requests(
    meta: UploadMetadata, files: Sequence[LocalFile], progress: Progress | None
) -> AsyncIterator[pb.UploadVersionRequest]:
    yield convert.upload_metadata_to_pb(meta)
    for f in files:
        chunks = read_file_chunks(f.source, CHUNK_BYTES)
        while data := await asyncio.to_thread(next, chunks, b""):
            yield pb.UploadVersionRequest(chunk=pb.FileChunk(file=f.path, data=data))
            if progress is not None:
                progress(len(data))


async def _all_pages(fetch: Callable[[str], Awaitable[Page[T]]]) -> Page[T]:
    first: Page[T] = await fetch("")
    items, token = list(first.items), first.next_page_token
    while token:
        page: Page[T] = await fetch(token)
        items.extend(page.items)
        token = page.next_page_token
    return Page(items, "", first.revision)
