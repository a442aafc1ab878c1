"""Registry mode: serve what the registry says, and follow it live.

For each served model the source keeps loaded the version every alias points at
and the latest active version. It downloads a version once into the local cache
(verified by sha256, moved into place whole), loads and warms it before any
alias points requests at it, and unloads a version only after nothing points at
it any more. While the registry is away it keeps serving what it has, and the
watch resumes from its last revision when the registry is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import ServiceError
from services.common.files import sha256_file, write_atomically
from services.inference.config import ModelConfig, parse_config
from services.inference.manager import ModelManager
from services.registry.client import RegistryClient
from services.registry.domain import (
    MAIN_FILE,
    EventType,
    ModelSnapshot,
    Snapshot,
    Version,
    VersionState,
)

_log = logging.getLogger(__name__)
STATE_FILE = "served.json"


@dataclass(frozen=True)
class Selection:
    """Which models (and, per model, which aliases) to serve; empty means all."""

    models: dict[str, frozenset[str]]

    @classmethod
    def parse(cls, text: str) -> Selection:
        """`digits,resnet:production,resnet:canary` -> digits (all), resnet (two aliases)."""
        models: dict[str, set[str]] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, alias = item.partition(":")
            models.setdefault(name, set())
            if alias:
                models[name].add(alias)
        return cls({k: frozenset(v) for k, v in models.items()})

    def wants(self, model: str) -> bool:
        """Whether this server serves `model`."""
        return not self.models or model in self.models

    def aliases(self, model: str, aliases: dict[str, int]) -> dict[str, int]:
        """The aliases of `model` this server follows."""
        chosen = self.models.get(model)
        return {a: v for a, v in aliases.items() if not chosen or a in chosen}


@dataclass(frozen=True)
class Desired:
    """What one model should look like on this server."""

    versions: dict[int, Version]
    aliases: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)


CONFIG_LABEL = "maas.config."


def config_from_labels(labels: dict[str, str]) -> dict[str, Any]:
    """Serving config from labels such as `maas.config.dynamic_batching.max_batch_size=16`.

    Values are read as YAML scalars (`16`, `true`, `[4, 8]`); labels override the
    version's config file, and version labels override model labels.
    """
    out: dict[str, Any] = {}
    for key, text in sorted(labels.items()):
        if not key.startswith(CONFIG_LABEL):
            continue
        *parents, leaf = key[len(CONFIG_LABEL) :].split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[leaf] = text
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def desired_state(entry: ModelSnapshot, selection: Selection) -> Desired:
    """The versions to keep loaded: every followed alias's version, and the latest."""
    active = {v.version: v for v in entry.versions if v.state is VersionState.ACTIVE}
    aliases = {
        a: v
        for a, v in selection.aliases(entry.model.name, entry.model.aliases).items()
        if v in active
    }
    wanted = set(aliases.values())
    if active and not selection.models.get(entry.model.name):
        wanted.add(max(active))
    return Desired({v: active[v] for v in sorted(wanted)}, aliases, dict(entry.model.labels))


class RegistrySource:
    """Keeps the manager in step with the registry."""

    def __init__(
        self,
        client_factory: Callable[[], RegistryClient],
        manager: ModelManager,
        cache_dir: Path,
        selection: Selection,
        *,
        require_cuda: bool = False,
    ) -> None:
        self._client_factory = client_factory
        self.manager = manager
        self.cache_dir = cache_dir
        self.selection = selection
        self.require_cuda = require_cuda
        self.revision: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        """Load what the registry says (or, if it cannot be reached, what was served last)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.cache_dir.glob("*/.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            async with asyncio.timeout(timeout):
                await self.resync()
        except (TimeoutError, ServiceError) as exc:
            _log.warning("registry unreachable at start (%s); serving the cached models", exc)
            await self._load_cached()
        self._task = asyncio.ensure_future(self._follow())

    async def stop(self) -> None:
        """Stop following the registry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def resync(self) -> None:
        """Take a full snapshot and bring every model in line with it."""
        async with self._client_factory() as client:
            snapshot = await client.snapshot()
        await self._apply(snapshot, full=True)
        self.revision = snapshot.revision

    async def _follow(self, max_backoff: float = 10.0) -> None:
        backoff = 0.2
        while True:
            try:
                if self.revision is None:
                    await self.resync()
                async with self._client_factory() as client:
                    async for event in client.watch(self.revision, bookmarks=True):
                        await self._on_event(client, event.type, event.model)
                        self.revision = event.revision
                        backoff = 0.2
            except ServiceError as exc:
                # The registry is away: keep serving what is loaded, and catch up later.
                _log.warning("registry unreachable (%s); retrying in %.1fs", exc.status, backoff)
            except Exception:  # noqa: BLE001 - a bug here must not stop the following
                _log.exception("following the registry failed; retrying")
                self.revision = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    async def _on_event(self, client: RegistryClient, kind: EventType, model: str) -> None:
        if kind is EventType.RESYNC:
            snapshot = await client.snapshot()
            await self._apply(snapshot, full=True)
        elif kind is not EventType.BOOKMARK and self.selection.wants(model):
            await self._apply(await client.snapshot(model), full=False, only=model)

    async def _apply(self, snapshot: Snapshot, *, full: bool, only: str = "") -> None:
        seen = set()
        for entry in snapshot.models:
            name = entry.model.name
            if not self.selection.wants(name):
                continue
            seen.add(name)
            await self._sync_model(name, desired_state(entry, self.selection))
        gone = set(self.manager.models) - seen if full else ({only} - seen if only else set())
        for name in gone:
            await self._sync_model(name, Desired({}, {}))
        self._save_state()

    async def _sync_model(self, name: str, want: Desired) -> None:
        async with self.manager.lock(name):
            for number, version in want.versions.items():
                entry = self.manager.models.get(name, {}).get(number)
                if entry is not None and entry.model is not None:
                    continue
                try:
                    path = await self._local_copy(version)
                    config = self._config(version, want.labels)
                except ServiceError as exc:
                    self.manager.fail_version(name, number, exc.message)
                    continue
                await self.manager.load_version(name, number, path, config)
            # Aliases move only once their versions are ready, so no request fails.
            ready = {a: v for a, v in want.aliases.items() if self.manager.ready(name, str(v))}
            self.manager.aliases[name] = ready
            for number in list(self.manager.models.get(name, {})):
                if number not in want.versions:
                    await self.manager.unload_version(name, number, forget=True)
            if not self.manager.models.get(name):
                self.manager.models.pop(name, None)
                self.manager.aliases.pop(name, None)

    def _config(self, version: Version, model_labels: dict[str, str]) -> ModelConfig:
        source = f"{version.model} v{version.version} config"
        text = version.config
        overrides = config_from_labels({**model_labels, **version.labels})
        if overrides:
            base = yaml.safe_load(text) if text.strip() else {}
            if not isinstance(base, dict):
                base = {}
            text = yaml.safe_dump(_merge(base, overrides))
        config = parse_config(text, source=source)
        if self.require_cuda:
            config = config.model_copy(update={"require_cuda": True})
        return config

    def _version_dir(self, version: Version) -> Path:
        return self.cache_dir / version.model / f"{version.version}-{version.sha256[:16]}"

    async def _local_copy(self, version: Version) -> Path:
        """model.onnx of a version in the cache, downloading it once and verifying it."""
        final = self._version_dir(version)
        if (final / MAIN_FILE).is_file():
            digest, _ = await asyncio.to_thread(sha256_file, final / MAIN_FILE)
            if digest == version.sha256:
                return final / MAIN_FILE
            shutil.rmtree(final, ignore_errors=True)
        staging = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            async with self._client_factory() as client:
                await client.download(version.model, version.version, staging)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final / MAIN_FILE

    def _save_state(self) -> None:
        """Remember what is served, so a restart without the registry can serve it."""
        state = {
            name: {
                "versions": {
                    str(n): str(e.model.path) for n, e in versions.items() if e.model is not None
                },
                "aliases": self.manager.aliases.get(name, {}),
                "config": {
                    str(n): e.model.config.model_dump(mode="json")
                    for n, e in versions.items()
                    if e.model is not None
                },
            }
            for name, versions in self.manager.models.items()
        }
        write_atomically(self.cache_dir / STATE_FILE, json.dumps(state))

    async def _load_cached(self) -> None:
        path = self.cache_dir / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        for name, entry in state.items():
            for number, file in entry["versions"].items():
                config = ModelConfig.model_validate(entry["config"][number])
                if Path(file).is_file():
                    await self.manager.load_version(name, int(number), Path(file), config)
            self.manager.aliases[name] = {
                a: v for a, v in entry["aliases"].items() if self.manager.ready(name, str(v))
            }
