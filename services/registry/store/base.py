"""The metadata store interface the registry's app layer depends on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from services.registry.domain import (
    AliasChange,
    Event,
    FileInfo,
    Model,
    NewVersion,
    Snapshot,
    Version,
    VersionState,
)
from services.registry.names import Selector


class ChangeSignal(Protocol):
    """Wakes the change feed when another replica commits a change."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


class MetadataStore(Protocol):
    """Models, versions, aliases and the event log, changed in single transactions.

    Every change appends its events and advances the revision in the same
    transaction. Deletions return the sha256 of blobs nothing references any more.
    """

    @property
    def kind(self) -> str:
        """Which database: "sqlite", "postgresql", ..."""
        ...

    async def open(self) -> None:
        """Connect and create the schema if needed; ConnectionError, with the
        driver's reason, when the database cannot be reached."""
        ...

    async def close(self) -> None: ...

    def listen(self, wake: Callable[[], None]) -> ChangeSignal | None:
        """Something that calls `wake` whenever any replica commits a change, not yet
        started; None when the database has no such signal (then only polling)."""
        ...

    async def create_model(self, name: str, description: str, labels: dict[str, str]) -> Model: ...

    async def get_model(self, name: str) -> Model: ...

    async def list_models(
        self, *, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Model], int]:
        """Up to `limit` models after `after` in name order, and the revision read at."""
        ...

    async def delete_model(self, name: str) -> list[str]: ...

    async def add_version(self, new: NewVersion) -> Version:
        """Insert under the next version number (and set `new.alias` if given)."""
        ...

    async def get_version(self, model: str, version: int) -> Version: ...

    async def list_versions(
        self, model: str, *, after: int, limit: int, state: VersionState | None
    ) -> tuple[list[Version], int]: ...

    async def archive_version(self, model: str, version: int) -> Version: ...

    async def delete_version(self, model: str, version: int) -> list[str]: ...

    async def set_alias(self, model: str, alias: str, version: int) -> AliasChange: ...

    async def delete_alias(self, model: str, alias: str) -> None: ...

    async def resolve(self, model: str, selector: Selector) -> Version: ...

    async def snapshot(self, model: str | None) -> Snapshot: ...

    async def events_since(self, revision: int, limit: int) -> list[Event]: ...

    async def event_window(self) -> tuple[int, int]:
        """(oldest kept revision, current revision); oldest is current + 1 when none is kept."""
        ...

    async def current_revision(self) -> int: ...

    async def referenced_blobs(self) -> set[str]: ...

    async def unreferenced(self, shas: set[str]) -> list[str]: ...

    async def all_files(self) -> list[tuple[str, int, FileInfo]]:
        """(model, version, file) for every file of every version."""
        ...
