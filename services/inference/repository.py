"""The model repository directory: `<repo>/<model>/<version>/model.onnx`.

An optional `<repo>/<model>/config.yaml` configures batching, instances and
providers for every version of that model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument, NotFound, ServiceError
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


def scan_model(model_dir: Path) -> list[VersionFiles]:
    """The numbered version directories of one model."""
    found = []
    for child in model_dir.iterdir():
        if not (child.is_dir() and child.name.isdigit()):
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
        """Every model directory in the repository."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    async def load_all(self) -> None:
        """Load every model; broken ones are recorded as unavailable, with the reason."""
        for name in self.model_names():
            await self.load(name, strict=False)

    async def load(self, name: str, *, strict: bool = True) -> None:
        """(Re)load one model: new versions load, changed ones reload, removed ones unload."""
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise NotFound(f"model '{name}' is not in the model repository {self.root}")
        async with self.manager.lock(name):
            try:
                config = load_config(model_dir / CONFIG_FILE)
                if self.require_cuda:
                    config = config.model_copy(update={"require_cuda": True})
            except ServiceError as exc:
                self._fail_all(name, scan_model(model_dir), exc.message)
                if strict:
                    raise InvalidArgument(f"failed to load model '{name}': {exc.message}") from None
                return
            failures = await self._sync(name, scan_model(model_dir), config)
        if strict and failures:
            raise InvalidArgument(f"failed to load model '{name}': {'; '.join(failures)}")

    async def unload(self, name: str) -> None:
        """Unload every version of one model."""
        if name not in self.manager.models:
            raise NotFound(f"model '{name}' is not loaded")
        async with self.manager.lock(name):
            for version in list(self.manager.models[name]):
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
        self.manager.models.get(name, {}).pop(0, None)
        present = {v.version for v in versions}
        for v in versions:
            entry = self.manager.models.get(name, {}).get(v.version)
            if v.stamp is None:
                reason = f"version {v.version} has no {MODEL_FILE}"
                failures.append(reason)
                if entry is None or entry.model is None:
                    self.manager.fail_version(name, v.version, reason)
                continue
            unchanged = entry is not None and entry.model is not None
            if unchanged and self._stamps.get((name, v.version)) == (v.stamp, config):
                continue
            if await self.manager.load_version(name, v.version, v.path, config):
                self._stamps[(name, v.version)] = (v.stamp, config)
            else:
                entry = self.manager.models[name][v.version]
                failures.append(f"version {v.version}: {entry.reason or 'load failed'}")
        for version in list(self.manager.models.get(name, {})):
            if version not in present:
                self._stamps.pop((name, version), None)
                await self.manager.unload_version(name, version, forget=True)
        return failures
