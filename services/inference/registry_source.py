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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.backoff import WATCH_MAX_BACKOFF, next_backoff
from services.common.errors import ServiceError
from services.common.files import sha256_file, write_atomically
from services.inference.config import ModelConfig
from services.inference.manager import ModelManager
from services.inference.registry_plan import Desired, Selection, desired_state, version_config
from services.registry.client import RegistryClient
from services.registry.domain import (
    MAIN_FILE,
    EventType,
    Snapshot,
    Version,
)

_log = logging.getLogger(__name__)
STATE_FILE = "served.json"
MIN_BACKOFF = 0.2  # seconds before following the registry again after an error


@dataclass(frozen=True)
class Retry:
    """A version whose load failed: what it was tried with, how often, and when next."""

    attempt: tuple[str, ModelConfig]  # sha256 and config: a change is retried at once
    failures: int
    due: float


class RegistrySource:
    """Keeps the manager in step with the registry.

    One task receives the watch's events and notes which models changed; another
    applies each batch of noted changes (one snapshot per model, however many events
    it had) and then writes the state file once. File work runs on worker threads.
    """

    def __init__(
        self,
        client_factory: Callable[[], RegistryClient],
        manager: ModelManager,
        cache_dir: Path,
        selection: Selection,
        *,
        require_cuda: bool = False,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 300.0,
    ) -> None:
        self._client_factory = client_factory
        self.manager = manager
        self.cache_dir = cache_dir
        self.selection = selection
        self.require_cuda = require_cuda
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        # The revision applied so far; the watch resumes after it.
        self.revision: int | None = None
        # The revision of the last event received, applied or not.
        self.received: int | None = None
        self.state_writes = 0
        self._task: asyncio.Task[None] | None = None
        self._changed: set[str] = set()
        self._resync_needed = False
        self._wake = asyncio.Event()
        self._desired: dict[str, Desired] = {}
        self._retries: dict[tuple[str, int], Retry] = {}
        self._state_text: str | None = None
        self._backoff = MIN_BACKOFF

    async def start(self, timeout: float = 30.0) -> None:
        """Load what the registry says (or, if it cannot be reached, what was served last)."""
        await asyncio.to_thread(_prepare_cache, self.cache_dir)
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
        await self._save_state()
        self.revision = snapshot.revision

    async def _follow(self, max_backoff: float = WATCH_MAX_BACKOFF) -> None:
        while True:
            try:
                if self.revision is None:
                    await self.resync()
                self._changed.clear()
                self._resync_needed = False
                async with self._client_factory() as client:
                    receiver = asyncio.ensure_future(self._receive(client))
                    try:
                        await self._process(client, receiver)
                    finally:
                        receiver.cancel()
                        with contextlib.suppress(asyncio.CancelledError, ServiceError):
                            await receiver
            except ServiceError as exc:
                # The registry is away: keep serving what is loaded, and catch up later.
                _log.warning(
                    "registry unreachable (%s); retrying in %.1fs", exc.status, self._backoff
                )
            except Exception:  # noqa: BLE001 - a bug here must not stop the following
                _log.exception("following the registry failed; retrying")
                self.revision = None
            await asyncio.sleep(self._backoff)
            self._backoff = next_backoff(self._backoff, max_backoff)

    async def _receive(self, client: RegistryClient) -> None:
        """Note what each event changed; applying is _process's job."""
        async for event in client.watch(self.revision, bookmarks=True):
            if event.type is EventType.RESYNC:
                self._resync_needed = True
                self._changed.clear()
            elif event.type is not EventType.BOOKMARK and self.selection.wants(event.model):
                self._changed.add(event.model)
            self.received = event.revision
            self._wake.set()

    async def _process(self, client: RegistryClient, receiver: asyncio.Future[None]) -> None:
        """Apply the changes noted so far as one batch, and retry failed loads when due."""
        while True:
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {waiter, receiver}, timeout=self._next_retry_in(), return_when="FIRST_COMPLETED"
                )
            finally:
                waiter.cancel()
            if receiver in done:
                receiver.result()  # the watch failed: raise its error
                return
            self._wake.clear()
            revision = self.received
            changed, self._changed = self._changed, set()
            resync, self._resync_needed = self._resync_needed, False
            if resync:
                await self._apply(await client.snapshot(), full=True)
            for name in sorted(changed):
                await self._apply(await client.snapshot(name), full=False, only=name)
            for name in self._retries_due():
                await self._sync_model(name, self._desired.get(name, Desired({}, {})))
            await self._save_state()
            if revision is not None:
                self.revision = revision
            self._backoff = MIN_BACKOFF

    async def _apply(self, snapshot: Snapshot, *, full: bool, only: str = "") -> None:
        seen = set()
        for entry in snapshot.models:
            name = entry.model.name
            if not self.selection.wants(name):
                continue
            seen.add(name)
            want = self._desired[name] = desired_state(entry, self.selection)
            await self._sync_model(name, want)
        known = set(self.manager.model_names()) | set(self._desired)
        gone = known - seen if full else ({only} - seen if only else set())
        for name in sorted(gone):
            self._desired.pop(name, None)
            await self._sync_model(name, Desired({}, {}))

    async def _sync_model(self, name: str, want: Desired) -> None:
        async with self.manager.lock(name):
            for number, version in want.versions.items():
                status = self.manager.versions(name).get(number)
                if status is not None and status.ready:
                    continue
                try:
                    config = self._config(version, want.labels)
                except ServiceError as exc:
                    self.manager.fail_version(name, number, exc.message)
                    continue
                await self._load(name, version, config)
            # Aliases move only once their versions are ready, so no request fails.
            ready = {a: v for a, v in want.aliases.items() if self.manager.ready(name, str(v))}
            self.manager.set_aliases(name, ready)
            for number in self.manager.versions(name):
                if number not in want.versions:
                    self._retries.pop((name, number), None)
                    await self.manager.unload_version(name, number, forget=True)

    async def _load(self, name: str, version: Version, config: ModelConfig) -> None:
        """Download and load one version, unless it failed with the same files and
        config and its retry is not due yet."""
        key, attempt = (name, version.version), (version.sha256, config)
        retry = self._retries.get(key)
        now = asyncio.get_running_loop().time()
        if retry is not None and retry.attempt == attempt and now < retry.due:
            return
        try:
            path = await self._local_copy(version)
            loaded = await self.manager.load_version(name, version.version, path, config)
        except (ServiceError, OSError) as exc:
            reason = exc.message if isinstance(exc, ServiceError) else str(exc)
            self.manager.fail_version(name, version.version, reason)
            loaded = False
        if loaded:
            self._retries.pop(key, None)
            return
        failures = retry.failures + 1 if retry is not None and retry.attempt == attempt else 1
        delay = min(self.retry_seconds * 2 ** (failures - 1), self.max_retry_seconds)
        self._retries[key] = Retry(attempt, failures, now + delay)
        _log.info("model %s version %s: next load attempt in %.1fs", name, version.version, delay)

    def _retries_due(self) -> list[str]:
        now = asyncio.get_running_loop().time()
        return sorted({name for (name, _), r in self._retries.items() if r.due <= now})

    def _next_retry_in(self) -> float | None:
        if not self._retries:
            return None
        soonest = min(r.due for r in self._retries.values())
        return max(0.0, soonest - asyncio.get_running_loop().time())

    def _config(self, version: Version, model_labels: dict[str, str]) -> ModelConfig:
        config = version_config(version, model_labels)
        if self.require_cuda:
            config = config.model_copy(update={"require_cuda": True})
        return config

    def _version_dir(self, version: Version) -> Path:
        return self.cache_dir / version.model / f"{version.version}-{version.sha256[:16]}"

    async def _local_copy(self, version: Version) -> Path:
        """model.onnx of a version in the cache, downloading it once and verifying it."""
        final = self._version_dir(version)
        if await asyncio.to_thread(_cached_copy_ok, final, version.sha256):
            return final / MAIN_FILE
        staging = final.parent / f".tmp-{uuid.uuid4().hex}"
        progress = DownloadLog(version.model, version.version, version.total_size_bytes)
        try:
            async with self._client_factory() as client:
                await client.download(
                    version.model, version.version, staging, progress=progress.update
                )
            progress.done()
            await asyncio.to_thread(os.replace, staging, final)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        return final / MAIN_FILE

    async def _save_state(self) -> None:
        """Remember what is served, so a restart without the registry can serve it;
        written only when it changed, on a worker thread."""
        state: dict[str, dict[str, Any]] = {}
        for served in self.manager.served():
            entry = state.setdefault(
                served.name,
                {"versions": {}, "aliases": self.manager.aliases(served.name), "config": {}},
            )
            entry["versions"][str(served.version)] = str(served.path)
            entry["config"][str(served.version)] = served.config.model_dump(mode="json")
        text = json.dumps(state, sort_keys=True)
        if text == self._state_text:
            return
        await asyncio.to_thread(write_atomically, self.cache_dir / STATE_FILE, text)
        self._state_text = text
        self.state_writes += 1

    async def _load_cached(self) -> None:
        try:
            text = await asyncio.to_thread(_read_text, self.cache_dir / STATE_FILE)
            state = json.loads(text) if text is not None else {}
        except (OSError, ValueError) as exc:
            _log.warning(
                "cannot read %s (%s); serving nothing until the registry is back", STATE_FILE, exc
            )
            return
        self._state_text = text
        for name, entry in state.items():
            async with self.manager.lock(name):
                for number, file in entry["versions"].items():
                    try:
                        config = ModelConfig.model_validate(entry["config"][number])
                    except (KeyError, ValueError) as exc:  # a file from another release
                        _log.warning("%s: cannot use %s v%s: %s", STATE_FILE, name, number, exc)
                        continue
                    if await asyncio.to_thread(Path(file).is_file):
                        await self.manager.load_version(name, int(number), Path(file), config)
                self.manager.set_aliases(
                    name,
                    {a: v for a, v in entry["aliases"].items() if self.manager.ready(name, str(v))},
                )


class DownloadLog:
    """Logs a large download's progress every quarter, and its time and rate at the end,
    so an operator waiting on a cold replica sees it move."""

    def __init__(self, model: str, version: int, total: int, min_bytes: int = 16 << 20) -> None:
        self.model, self.version, self.total = model, version, total
        self.enabled = total >= min_bytes
        self.received = 0
        self._next_quarter = 1
        self._started = time.monotonic()

    def update(self, count: int) -> None:
        """`count` more bytes arrived."""
        self.received += count
        if not self.enabled or self._next_quarter > 3:
            return
        if self.received * 4 >= self.total * self._next_quarter:
            _log.info(
                "model %s version %s: downloaded %d%% of %.1f MiB",
                self.model,
                self.version,
                25 * self._next_quarter,
                self.total / (1 << 20),
            )
            self._next_quarter += 1

    def done(self) -> None:
        """The download finished and was verified."""
        if not self.enabled:
            return
        seconds = max(time.monotonic() - self._started, 1e-6)
        _log.info(
            "model %s version %s: downloaded %.1f MiB in %.1fs (%.1f MiB/s)",
            self.model,
            self.version,
            self.received / (1 << 20),
            seconds,
            self.received / (1 << 20) / seconds,
        )


def _prepare_cache(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for leftover in cache_dir.glob("*/.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _cached_copy_ok(final: Path, sha256: str) -> bool:
    """Whether the cache holds the version's file intact; a bad copy is removed."""
    if (final / MAIN_FILE).is_file():
        digest, _ = sha256_file(final / MAIN_FILE)
        if digest == sha256:
            return True
        shutil.rmtree(final, ignore_errors=True)
    return False


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
