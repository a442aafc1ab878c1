"""Which model versions exist, their states, and resolving a request to one.

Sources (a model directory, or the registry) tell the manager which versions
to load and unload; the manager loads and warms a version before it takes
traffic, and drains a version's in-flight requests before releasing it.

A version that cannot be loaded keeps two reasons: the full one (ONNX Runtime's
message, which names the model file by its server path) for the log and for a
caller allowed to see it (services.common.redact.full_detail), and the same text
without paths for everyone else.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from services.common.errors import NotFound, Unavailable
from services.common.names import echo
from services.common.redact import full_detail, without_paths
from services.common.telemetry import Tracing
from services.common.versions import parse_number
from services.inference.config import ModelConfig
from services.inference.metrics import InferenceMetrics
from services.inference.model import LoadedModel, Sessions, open_sessions
from services.inference.runtime import LoadError
from services.inference.tasks import TaskBackend, open_task

_log = logging.getLogger(__name__)
# The version selector for the newest ready version, as on the gateway and the registry.
LATEST = "latest"
UNEXPECTED_LOAD_ERROR = "the model could not be loaded: an unexpected error (see the inference log)"


class State(enum.Enum):
    """A model version's state, as RepositoryIndex reports it."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class VersionEntry:
    """What is known of one version, loaded or not."""

    version: int
    state: State
    # Why it is not ready, as clients see it (no server paths).
    reason: str = ""
    model: LoadedModel | None = None
    # The full reason, for the log and the admin side of RepositoryIndex.
    detail: str = ""


@dataclass(frozen=True)
class VersionStatus:
    """A snapshot of one version's state, for the model sources."""

    version: int
    state: State
    reason: str
    ready: bool


@dataclass(frozen=True)
class ServedVersion:
    """A ready version's file and config: what a restart needs to serve it again."""

    name: str
    version: int
    path: Path
    config: ModelConfig


@dataclass(frozen=True)
class IndexEntry:
    """One row of RepositoryIndex."""

    name: str
    version: str
    state: str
    reason: str


ReadyListener = Callable[[str, bool], Awaitable[None]]


@dataclass
class ModelManager:
    """All model versions of this server, by name and version number."""

    on_ready_change: ReadyListener | None = None
    metrics: InferenceMetrics | None = None
    tracing: Tracing = field(default_factory=Tracing)
    _models: dict[str, dict[int, VersionEntry]] = field(default_factory=dict)
    # alias -> version, per model; set by the registry source.
    _aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        """Serialises loads and unloads of one model."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def load_version(self, name: str, version: int, path: Path, config: ModelConfig) -> bool:
        """Load and warm a version, then swap it in; the old copy drains. False on failure."""
        versions = self._models.setdefault(name, {})
        entry = versions.get(version)
        if entry is None or entry.model is None:
            entry = versions[version] = VersionEntry(version, State.LOADING)
        started = time.perf_counter()
        try:
            if config.task == "tensor":
                opened: Sessions | TaskBackend = await asyncio.to_thread(
                    open_sessions, path, config
                )
            else:
                opened = await asyncio.to_thread(open_task, path, config)
        except Exception as exc:  # noqa: BLE001 - a broken model must not stop the server
            if isinstance(exc, LoadError):
                detail = str(exc)
                reason = without_paths(detail, [path.parent])
                _log.warning("model %s version %s failed to load: %s", name, version, detail)
            else:
                detail, reason = f"{type(exc).__name__}: {exc}", UNEXPECTED_LOAD_ERROR
                _log.exception("model %s version %s failed to load", name, version)
            if self.metrics is not None:
                self.metrics.load_failures.labels(name).inc()
            if entry.model is None:
                entry.state, entry.reason, entry.detail = State.UNAVAILABLE, reason, detail
            await self._notify(name)
            return False
        old = entry.model
        if isinstance(opened, Sessions):
            model = LoadedModel.start(name, version, path, config, opened, self.tracing)
        else:
            model = LoadedModel.start_task(name, version, path, config, opened)
        if self.metrics is not None:
            self.metrics.load_seconds.labels(name).observe(time.perf_counter() - started)
            model.stats.listener = partial(self.metrics.execution, model)
        entry.model = model
        entry.state, entry.reason, entry.detail = State.READY, "", ""
        await self._notify(name)
        if old is not None:
            await old.close()
        return True

    def fail_version(self, name: str, version: int, reason: str) -> None:
        """Record a version that cannot be loaded at all; a ready copy keeps serving.

        `reason` is the full text: clients see it without paths."""
        _log.warning("model %s version %s cannot be loaded: %s", name, version, reason)
        entry = self._models.setdefault(name, {}).get(version)
        if entry is not None and entry.model is not None:
            return
        self._models[name][version] = VersionEntry(
            version, State.UNAVAILABLE, without_paths(reason), detail=reason
        )

    def forget(self, name: str, version: int) -> None:
        """Drop the record of a version that holds no model (a placeholder)."""
        versions = self._models.get(name, {})
        entry = versions.get(version)
        if entry is not None and entry.model is None:
            del versions[version]
            if not versions:
                del self._models[name]
                self._aliases.pop(name, None)

    async def unload_version(self, name: str, version: int, *, forget: bool = False) -> None:
        """Stop new requests to a version, let in-flight ones finish, release it.

        With `forget`, the version's record goes too, and the model's once it has none."""
        entry = self._models.get(name, {}).get(version)
        if entry is None:
            return
        model, entry.model = entry.model, None
        entry.state, entry.reason, entry.detail = State.UNLOADING, "", ""
        await self._notify(name)
        if model is not None:
            await model.close()
        entry.state, entry.reason, entry.detail = State.UNAVAILABLE, "unloaded", "unloaded"
        if forget:
            self._models[name].pop(version, None)
            if not self._models[name]:
                del self._models[name]
                self._aliases.pop(name, None)
        await self._notify(name)

    async def unload_all(self) -> None:
        """Unload every version of every model."""
        for name, versions in list(self._models.items()):
            for version in list(versions):
                await self.unload_version(name, version)

    def model_names(self) -> list[str]:
        """Every model with at least one known version."""
        return sorted(self._models)

    def versions(self, name: str) -> dict[int, VersionStatus]:
        """What is known of each version of a model, by number."""
        return {
            n: VersionStatus(n, e.state, e.reason, e.model is not None)
            for n, e in sorted(self._models.get(name, {}).items())
        }

    def set_aliases(self, name: str, aliases: dict[str, int]) -> None:
        """The aliases requests may name for a model (registry mode)."""
        if name in self._models:
            self._aliases[name] = dict(aliases)

    def aliases(self, name: str) -> dict[str, int]:
        """A model's aliases, alias -> version number."""
        return dict(self._aliases.get(name, {}))

    def served(self) -> list[ServedVersion]:
        """Every ready version with its file and config."""
        return [
            ServedVersion(m.name, m.version, m.path, m.config)
            for versions in self._models.values()
            for e in versions.values()
            if (m := e.model) is not None
        ]

    def resolve(self, name: str, version: str) -> LoadedModel:
        """The ready version a request names: a number, an alias, or empty or 'latest' for
        the newest ready one (as the gateway and the registry read 'latest')."""
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"unknown model {echo(name)}")
        if not version or version == LATEST:
            ready = [e for e in versions.values() if e.model is not None]
            if not ready:
                newest = max(versions.values(), key=lambda e: e.version)
                detail = f": {newest.reason}" if newest.reason else ""
                raise Unavailable(
                    f"model '{name}' has no ready version; version {newest.version} is "
                    f"{newest.state.value}{detail}"
                )
            model = max(ready, key=lambda e: e.version).model
            assert model is not None
            return model
        number = self._version_number(name, version)
        entry = versions.get(number)
        if entry is None:
            raise NotFound(f"model '{name}' has no version {echo(version)}")
        if entry.model is None:
            detail = f": {entry.reason}" if entry.reason else ""
            raise Unavailable(f"model '{name}' version {number} is {entry.state.value}{detail}")
        return entry.model

    def _version_number(self, name: str, version: str) -> int:
        number = parse_number(version)
        if number is not None:
            return number
        alias = self._aliases.get(name, {}).get(version)
        if alias is None:
            raise NotFound(
                f"model '{name}' has no version {echo(version)}: expected a version number "
                "or an alias (or 'latest')"
            )
        return alias

    def ready(self, name: str, version: str = "") -> bool:
        """Whether the named version (or any version) is ready."""
        try:
            self.resolve(name, version)
        except (NotFound, Unavailable):
            return False
        return True

    def loaded(self) -> list[LoadedModel]:
        """Every ready model version."""
        return [e.model for versions in self._models.values() for e in versions.values() if e.model]

    def index(self, ready_only: bool = False, full: bool | None = None) -> list[IndexEntry]:
        """Every known version with its state and, when not ready, why: the full reason
        when `full` (by default: when the current call may see it), else without paths."""
        if full is None:
            full = full_detail()
        rows = [
            IndexEntry(name, str(e.version), e.state.value, e.detail if full else e.reason)
            for name, versions in sorted(self._models.items())
            for e in sorted(versions.values(), key=lambda e: e.version)
        ]
        return [r for r in rows if r.state == State.READY.value] if ready_only else rows

    async def _notify(self, name: str) -> None:
        if self.on_ready_change is not None:
            await self.on_ready_change(name, self.ready(name))
