"""Build a demo model directory once: a content stamp, a lock, and an atomic swap.

A build takes from seconds to a minute, so it is skipped when the directory holds
a stamp with the same fingerprint (the builder's code and the versions of the
packages it reads). Two processes (two pytest runs, `make run` and a test) may
build the same directory at once: one builds under a file lock while the other
waits, then finds it current. The new directory is written beside the old one and
renamed into place, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

_QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",  # every package carries its files; never ask a hub
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
}
STAMP_FILE = ".demo-stamp.json"  # hidden: the repository scanner skips dot-files


def fingerprint(sources: Sequence[Path], packages: Sequence[str]) -> str:
    """A hash of the builder's source files and the installed versions of `packages`."""
    digest = hashlib.sha256()
    for path in (*sources, Path(__file__)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for name in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()


def _read(model_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((model_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def listed_files(model_dir: Path) -> list[Path]:
    """The files the last build of `model_dir` wrote (current or not); [] if none."""
    data = _read(model_dir) or {}
    return [model_dir / name for name in data.get("files", [])]


def built_files(model_dir: Path, stamp: str) -> list[Path] | None:
    """The files of an up-to-date build in `model_dir`, or None when it needs building."""
    data = _read(model_dir)
    if data is None or data.get("fingerprint") != stamp:
        return None
    files = listed_files(model_dir)
    return files if files and all(f.is_file() for f in files) else None


def build_identity(model_dir: Path) -> tuple[int, int] | None:
    """Changes whenever the directory is rebuilt (the stamp's inode and mtime)."""
    try:
        info = (model_dir / STAMP_FILE).stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = model_dir.parent / f".{model_dir.name}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or advice from Hugging Face libraries, no tracer warnings:
    a build is one line in the caller's output, and its failure an exception."""
    saved = {k: os.environ.get(k) for k in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_once(model_dir: Path, stamp: str, write: Callable[[Path], None]) -> bool:
    """Run `write(staging_dir)` unless `model_dir` is current; True when it built.

    `write` fills a fresh directory with everything the model directory holds; it
    should raise when its build-time check fails, and then nothing is replaced.
    """
    if built_files(model_dir, stamp) is not None:
        return False
    with _locked(model_dir):
        if built_files(model_dir, stamp) is not None:
            return False  # another process built it while this one waited
        staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}-"))
        try:
            with _quiet():
                write(staging)
            files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            record = {"fingerprint": stamp, "files": files}
            (staging / STAMP_FILE).write_text(json.dumps(record, indent=2) + "\n")
            for path in staging.rglob("*"):
                # mkdtemp and onnx make owner-only files; serve them like any model file.
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            os.chmod(staging, 0o755)
            old = None
            if model_dir.exists():
                old = model_dir.with_name(f".{model_dir.name}-old-{os.getpid()}")
                os.rename(model_dir, old)
            os.rename(staging, model_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _log.info("built %s", model_dir)
    return True
