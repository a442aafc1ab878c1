"""The ModelRegistry gRPC servicer: convert the request, call the app, convert the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from google.protobuf.empty_pb2 import Empty
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.common.errors import InvalidArgument
from services.common.server import ServiceBinding
from services.registry import convert
from services.registry.app import Registry
from services.registry.uploads import UploadPart

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelRegistry"].full_name
Context: TypeAlias = grpc.aio.ServicerContext


class ModelRegistryServicer(registry_pb2_grpc.ModelRegistryServicer):
    """Thin adapter from the ModelRegistry service to `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self._app = registry

    def binding(self) -> ServiceBinding:
        """How GrpcServer registers this servicer."""
        return ServiceBinding(
            SERVICE_NAME,
            lambda server: registry_pb2_grpc.add_ModelRegistryServicer_to_server(self, server),
        )

    async def CreateModel(self, request: pb.CreateModelRequest, context: Context) -> pb.Model:
        model = await self._app.create_model(
            request.name, request.description, dict(request.labels)
        )
        return convert.model_to_pb(model)

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        return convert.model_to_pb(await self._app.get_model(request.name))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        page = await self._app.list_models(
            page_size=request.page_size, page_token=request.page_token, prefix=request.name_prefix
        )
        return pb.ListModelsResponse(
            models=[convert.model_to_pb(m) for m in page.items],
            next_page_token=page.next_page_token,
            revision=page.revision,
        )

    async def DeleteModel(self, request: pb.DeleteModelRequest, context: Context) -> Empty:
        await self._app.delete_model(request.name)
        return Empty()

    async def UploadVersion(
        self, request_iterator: AsyncIterator[pb.UploadVersionRequest], context: Context
    ) -> pb.Version:
        async def parts() -> AsyncIterator[UploadPart]:
            async for message in request_iterator:
                part = convert.upload_part_from_pb(message)
                if part is None:
                    raise InvalidArgument("upload: a message carries neither metadata nor chunk")
                yield part

        return convert.version_to_pb(await self._app.upload(parts()))

    async def GetVersion(self, request: pb.GetVersionRequest, context: Context) -> pb.Version:
        version = await self._app.get_version(request.model, request.version)
        return convert.version_to_pb(version)

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Context
    ) -> pb.ListVersionsResponse:
        page = await self._app.list_versions(
            request.model,
            page_size=request.page_size,
            page_token=request.page_token,
            state=convert.state_from_pb(request.state),
        )
        return pb.ListVersionsResponse(
            versions=[convert.version_to_pb(v) for v in page.items],
            next_page_token=page.next_page_token,
            revision=page.revision,
        )

    async def ArchiveVersion(
        self, request: pb.ArchiveVersionRequest, context: Context
    ) -> pb.Version:
        version = await self._app.archive_version(request.model, request.version)
        return convert.version_to_pb(version)

    async def DeleteVersion(self, request: pb.DeleteVersionRequest, context: Context) -> Empty:
        await self._app.delete_version(request.model, request.version)
        return Empty()

    async def DownloadVersion(
        self, request: pb.DownloadVersionRequest, context: Context
    ) -> AsyncIterator[pb.DownloadVersionResponse]:
        download = await self._app.open_download(request.model, request.version)
        try:
            yield pb.DownloadVersionResponse(metadata=convert.version_to_pb(download.version))
            async for path, data in download.chunks(self._app.settings.chunk_bytes):
                yield pb.DownloadVersionResponse(chunk=pb.FileChunk(file=path, data=data))
        finally:
            download.close()

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.SetAliasResponse:
        change = await self._app.set_alias(request.model, request.alias, request.version)
        return convert.alias_change_to_pb(change)

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Context) -> Empty:
        await self._app.delete_alias(request.model, request.alias)
        return Empty()

    async def ResolveVersion(
        self, request: pb.ResolveVersionRequest, context: Context
    ) -> pb.Version:
        return convert.version_to_pb(await self._app.resolve(request.model, request.version))

    async def GetSnapshot(self, request: pb.GetSnapshotRequest, context: Context) -> pb.Snapshot:
        return convert.snapshot_to_pb(await self._app.snapshot(request.model))

    async def Watch(
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchEvent]:
        since = request.since_revision if request.HasField("since_revision") else None
        async for event in self._app.watch(since, request.model):
            yield convert.event_to_pb(event)
