"""Protobuf messages to domain objects and back; used by the servicer and the client."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from maas_proto.registry.v1 import registry_pb2 as pb

from services.registry.domain import (
    Alias,
    AliasChange,
    Event,
    EventType,
    FileInfo,
    Model,
    ModelSnapshot,
    Signature,
    Snapshot,
    TensorSpec,
    Version,
    VersionState,
)
from services.registry.uploads import Chunk, UploadMetadata, UploadPart

_STATES: dict[VersionState, pb.VersionState] = {
    VersionState.ACTIVE: pb.VERSION_STATE_ACTIVE,
    VersionState.ARCHIVED: pb.VERSION_STATE_ARCHIVED,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}
_EVENTS: dict[EventType, pb.EventType] = {
    EventType.MODEL_CREATED: pb.EVENT_TYPE_MODEL_CREATED,
    EventType.MODEL_DELETED: pb.EVENT_TYPE_MODEL_DELETED,
    EventType.VERSION_ADDED: pb.EVENT_TYPE_VERSION_ADDED,
    EventType.VERSION_ARCHIVED: pb.EVENT_TYPE_VERSION_ARCHIVED,
    EventType.VERSION_DELETED: pb.EVENT_TYPE_VERSION_DELETED,
    EventType.ALIAS_SET: pb.EVENT_TYPE_ALIAS_SET,
    EventType.ALIAS_MOVED: pb.EVENT_TYPE_ALIAS_MOVED,
    EventType.ALIAS_DELETED: pb.EVENT_TYPE_ALIAS_DELETED,
    EventType.RESYNC: pb.EVENT_TYPE_RESYNC,
    EventType.BOOKMARK: pb.EVENT_TYPE_BOOKMARK,
}
_EVENTS_BACK = {v: k for k, v in _EVENTS.items()}


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def state_to_pb(state: VersionState) -> pb.VersionState:
    return _STATES[state]


def state_from_pb(value: pb.VersionState) -> VersionState | None:
    """The state a filter names; None for UNSPECIFIED."""
    return _STATES_BACK.get(value)


def model_to_pb(model: Model) -> pb.Model:
    return pb.Model(
        name=model.name,
        description=model.description,
        labels=model.labels,
        create_time=timestamp(model.create_time),
        latest_version=model.latest_version,
        aliases=model.aliases,
    )


def model_from_pb(msg: pb.Model) -> Model:
    return Model(
        name=msg.name,
        description=msg.description,
        labels=dict(msg.labels),
        create_time=from_timestamp(msg.create_time),
        latest_version=msg.latest_version,
        aliases=dict(sorted(msg.aliases.items())),
    )


def _spec_to_pb(spec: TensorSpec) -> pb.TensorSpec:
    return pb.TensorSpec(
        name=spec.name, datatype=spec.datatype, shape=spec.shape, unknown_rank=spec.unknown_rank
    )


def _spec_from_pb(msg: pb.TensorSpec) -> TensorSpec:
    return TensorSpec(msg.name, msg.datatype, tuple(msg.shape), msg.unknown_rank)


def file_to_pb(info: FileInfo) -> pb.File:
    return pb.File(path=info.path, sha256=info.sha256, size_bytes=info.size_bytes)


def file_from_pb(msg: pb.File) -> FileInfo:
    return FileInfo(msg.path, msg.sha256, msg.size_bytes)


def version_to_pb(version: Version) -> pb.Version:
    return pb.Version(
        model=version.model,
        version=version.version,
        description=version.description,
        labels=version.labels,
        state=state_to_pb(version.state),
        sha256=version.sha256,
        size_bytes=version.size_bytes,
        files=[file_to_pb(f) for f in version.files],
        total_size_bytes=version.total_size_bytes,
        signature=pb.Signature(
            inputs=[_spec_to_pb(s) for s in version.signature.inputs],
            outputs=[_spec_to_pb(s) for s in version.signature.outputs],
        ),
        config=version.config,
        aliases=version.aliases,
        create_time=timestamp(version.create_time),
        opset=version.opset,
        ir_version=version.ir_version,
    )


def version_from_pb(msg: pb.Version) -> Version:
    return Version(
        model=msg.model,
        version=msg.version,
        files=tuple(file_from_pb(f) for f in msg.files),
        signature=Signature(
            tuple(_spec_from_pb(s) for s in msg.signature.inputs),
            tuple(_spec_from_pb(s) for s in msg.signature.outputs),
        ),
        state=_STATES_BACK.get(msg.state, VersionState.ACTIVE),
        description=msg.description,
        labels=dict(msg.labels),
        config=msg.config,
        aliases=tuple(msg.aliases),
        create_time=from_timestamp(msg.create_time),
        opset=msg.opset,
        ir_version=msg.ir_version,
    )


def alias_change_to_pb(change: AliasChange) -> pb.SetAliasResponse:
    alias = change.alias
    return pb.SetAliasResponse(
        alias=pb.Alias(
            model=alias.model,
            alias=alias.alias,
            version=alias.version,
            update_time=timestamp(alias.update_time),
        ),
        previous_version=change.previous_version,
    )


def alias_change_from_pb(msg: pb.SetAliasResponse) -> AliasChange:
    a = msg.alias
    alias = Alias(a.model, a.alias, a.version, from_timestamp(a.update_time))
    return AliasChange(alias, msg.previous_version)


def event_to_pb(event: Event) -> pb.WatchEvent:
    return pb.WatchEvent(
        revision=event.revision,
        type=_EVENTS[event.type],
        model=event.model,
        version=event.version,
        alias=event.alias,
        previous_version=event.previous_version,
        time=timestamp(event.time),
    )


def event_from_pb(msg: pb.WatchEvent) -> Event:
    return Event(
        revision=msg.revision,
        type=_EVENTS_BACK[msg.type],
        model=msg.model,
        version=msg.version,
        alias=msg.alias,
        previous_version=msg.previous_version,
        time=from_timestamp(msg.time),
    )


def snapshot_to_pb(snapshot: Snapshot) -> pb.Snapshot:
    return pb.Snapshot(
        revision=snapshot.revision,
        models=[
            pb.ModelSnapshot(
                model=model_to_pb(entry.model),
                versions=[version_to_pb(v) for v in entry.versions],
            )
            for entry in snapshot.models
        ],
    )


def snapshot_from_pb(msg: pb.Snapshot) -> Snapshot:
    return Snapshot(
        revision=msg.revision,
        models=[
            ModelSnapshot(model_from_pb(e.model), [version_from_pb(v) for v in e.versions])
            for e in msg.models
        ],
    )


def upload_part_from_pb(msg: pb.UploadVersionRequest) -> UploadPart | None:
    """The part an upload message carries; None for a message with neither."""
    which = msg.WhichOneof("part")
    if which == "metadata":
        m = msg.metadata
        return UploadMetadata(
            model=m.model,
            sha256=m.sha256,
            size_bytes=m.size_bytes,
            description=m.description,
            labels=dict(m.labels),
            extra_files=tuple(file_from_pb(f) for f in m.extra_files),
            config=m.config,
            alias=m.alias,
        )
    if which == "chunk":
        return Chunk(msg.chunk.file, msg.chunk.data)
    return None


def upload_metadata_to_pb(meta: UploadMetadata) -> pb.UploadVersionRequest:
    return pb.UploadVersionRequest(
        metadata=pb.UploadMetadata(
            model=meta.model,
            description=meta.description,
            labels=meta.labels,
            sha256=meta.sha256,
            size_bytes=meta.size_bytes,
            extra_files=[file_to_pb(f) for f in meta.extra_files],
            config=meta.config,
            alias=meta.alias,
        )
    )
