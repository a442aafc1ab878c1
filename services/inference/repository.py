"""The model repository directory: `<repo>/<model>/<version>/model.onnx`.

An optional `<repo>/<model>/config.yaml` configures batching, instances and
providers for every version of that model.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound, ServiceError
from services.common.names import echo, model_name
from services.common.redact import without_paths
from services.common.versions import is_number
from services.inference.config import ModelConfig, load_config
from services.inference.manager import ModelManager

_log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class VersionFiles:
    """One version directory: its model file, if it has one."""

    version: int
    path: Path
    stamp: tuple[int, int] | None  # (mtime_ns, size) of model.onnx, None if missing


def read_model_dir(model_dir: Path) -> tuple[list[VersionFiles], ModelConfig | ServiceError] | None:
    """A model directory's versions and config (or why the config is bad); None if it is
    not a directory. Blocking: run it on a worker thread."""
    if not model_dir.is_dir():
        return None
    versions = scan_model(model_dir)
    try:
        return versions, load_config(model_dir / CONFIG_FILE)
    except ServiceError as exc:
        return versions, exc


def scan_model(model_dir: Path) -> list[VersionFiles]:
    """The numbered version directories of one model."""
    found = []
    for child in model_dir.iterdir():
        if not (child.is_dir() and is_number(child.name)):
            continue
        path = child / MODEL_FILE
        stat = path.stat() if path.is_file() else None
        found.append(
            VersionFiles(int(child.name), path, (stat.st_mtime_ns, stat.st_size) if stat else None)
        )
    return sorted(found, key=lambda v: v.version)


class DirectorySource:
    """Loads models from a repository directory, at start and on request."""

    def __init__(self, root: Path, manager: ModelManager, *, require_cuda: bool = False) -> None:
        self.root = root
        self.manager = manager
        self.require_cuda = require_cuda
        self._stamps: dict[tuple[str, int], tuple[tuple[int, int], ModelConfig]] = {}

    def model_names(self) -> list[str]:
        """Every model directory in the repository; blocking."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    async def load_all(self) -> None:
        """Load every model; broken ones are recorded as unavailable, with the reason."""
        for name in await asyncio.to_thread(self.model_names):
            await self.load(name, strict=False)

    async def load(self, name: str, *, strict: bool = True) -> None:
        """(Re)load one model: new versions load, changed ones reload, removed ones unload.

        A client's name (`strict`) must follow the model-name rule, so that it names a
        directory of the repository and nothing outside it ('../x' has no such name).
        """
        if strict:
            model_name(name)
        model_dir = self.root / name
        async with self.manager.lock(name):
            # The directory is read on a worker thread: the event loop keeps serving.
            found = await asyncio.to_thread(read_model_dir, model_dir)
            if found is None:
                raise NotFound(f"model {echo(name)} is not in the model repository")
            versions, config = found
            if isinstance(config, ServiceError):
                self._fail_all(name, versions, config.message)
                if strict:
                    raise InvalidArgument(
                        f"failed to load model '{name}': {without_paths(config.message)}"
                    ) from None
                return
            if self.require_cuda:
                config = config.model_copy(update={"require_cuda": True})
            failures = await self._sync(name, versions, config)
        if strict and failures:
            detail = without_paths("; ".join(failures))
            raise InvalidArgument(f"failed to load model '{name}': {detail}")

    async def unload(self, name: str) -> None:
        """Unload every version of one model."""
        if name not in self.manager.model_names():
            raise NotFound(f"model {echo(name)} is not loaded")
        async with self.manager.lock(name):
            for version in self.manager.versions(name):
                self._stamps.pop((name, version), None)
                await self.manager.unload_version(name, version)

    def _fail_all(self, name: str, versions: list[VersionFiles], reason: str) -> None:
        for v in versions or [VersionFiles(0, self.root / name, None)]:
            self.manager.fail_version(name, v.version, reason)

    async def _sync(
        self, name: str, versions: list[VersionFiles], config: ModelConfig
    ) -> list[str]:
        failures: list[str] = []
        if not versions:
            reason = f"no version directories with {MODEL_FILE} in {self.root / name}"
            self.manager.fail_version(name, 0, reason)
            return [reason]
        self.manager.forget(name, 0)
        present = {v.version for v in versions}
        for v in versions:
            entry = self.manager.versions(name).get(v.version)
            if v.stamp is None:
                reason = f"version {v.version} has no {MODEL_FILE}"
                failures.append(reason)
                self.manager.fail_version(name, v.version, reason)
                continue
            unchanged = entry is not None and entry.ready
            if unchanged and self._stamps.get((name, v.version)) == (v.stamp, config):
                continue
            if await self.manager.load_version(name, v.version, v.path, config):
                self._stamps[(name, v.version)] = (v.stamp, config)
            else:
                entry = self.manager.versions(name).get(v.version)
                reason = entry.reason if entry is not None else ""
                failures.append(f"version {v.version}: {reason or 'load failed'}")
        for version in self.manager.versions(name):
            if version not in present:
                self._stamps.pop((name, version), None)
                await self.manager.unload_version(name, version, forget=True)
        return failures
