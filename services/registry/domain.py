"""The registry's typed objects, shared by the app layer, the stores and the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Generic, TypeVar

MAIN_FILE = "model.onnx"
T = TypeVar("T")


def utcnow() -> datetime:
    """The current time, timezone-aware, truncated to microseconds."""
    return datetime.now(UTC)


class VersionState(StrEnum):
    """Whether a version may resolve as "latest"."""

    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"


class EventType(StrEnum):
    """What a change-feed event reports."""

    MODEL_CREATED = "MODEL_CREATED"
    MODEL_DELETED = "MODEL_DELETED"
    VERSION_ADDED = "VERSION_ADDED"
    VERSION_ARCHIVED = "VERSION_ARCHIVED"
    VERSION_DELETED = "VERSION_DELETED"
    ALIAS_SET = "ALIAS_SET"
    ALIAS_MOVED = "ALIAS_MOVED"
    ALIAS_DELETED = "ALIAS_DELETED"
    RESYNC = "RESYNC"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: v2 datatype and shape, -1 for dynamic dimensions."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    unknown_rank: bool = False


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class FileInfo:
    """One file of a version: relative path, sha256 (hex) and size."""

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Model:
    """A named model; its versions are listed separately."""

    name: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    create_time: datetime = field(default_factory=utcnow)
    latest_version: int = 0
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Version:
    """One immutable version of a model."""

    model: str
    version: int
    files: tuple[FileInfo, ...]
    signature: Signature
    state: VersionState = VersionState.ACTIVE
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    config: str = ""
    aliases: tuple[str, ...] = ()
    create_time: datetime = field(default_factory=utcnow)
    opset: int = 0
    ir_version: int = 0

    @property
    def main_file(self) -> FileInfo:
        """The model.onnx entry."""
        return next(f for f in self.files if f.path == MAIN_FILE)

    @property
    def sha256(self) -> str:
        """sha256 of model.onnx."""
        return self.main_file.sha256

    @property
    def size_bytes(self) -> int:
        """Size of model.onnx."""
        return self.main_file.size_bytes

    @property
    def total_size_bytes(self) -> int:
        """Size of every file together."""
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class NewVersion:
    """A validated upload, ready to be inserted; the store assigns the number."""

    model: str
    files: tuple[FileInfo, ...]
    signature: Signature
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    config: str = ""
    opset: int = 0
    ir_version: int = 0
    alias: str = ""


@dataclass(frozen=True)
class Alias:
    """An alias and the version it points at."""

    model: str
    alias: str
    version: int
    update_time: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class AliasChange:
    """The result of setting an alias: the alias and where it pointed before (0: new)."""

    alias: Alias
    previous_version: int


@dataclass(frozen=True)
class Event:
    """One change, numbered by its revision."""

    revision: int
    type: EventType
    model: str = ""
    version: int = 0
    alias: str = ""
    previous_version: int = 0
    time: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, read at `revision`."""

    items: list[T]
    next_page_token: str
    revision: int


@dataclass(frozen=True)
class ModelSnapshot:
    """A model with all its versions."""

    model: Model
    versions: list[Version]


@dataclass(frozen=True)
class Snapshot:
    """Every model with its versions, read at one revision."""

    revision: int
    models: list[ModelSnapshot]
