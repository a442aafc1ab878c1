"""Client-side file handling: what an upload sends, and writing a download atomically."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

from services.common.errors import InvalidArgument, ServiceError
from services.common.files import fsync_dir, sha256_file
from services.registry import names
from services.registry.domain import MAIN_FILE, FileInfo, Version


class IntegrityError(ServiceError):
    """Downloaded data did not match the sha256 or size the registry announced."""

    status: ClassVar[str] = "DATA_LOSS"


@dataclass(frozen=True)
class LocalFile:
    """A file to upload: its path inside the version, where it is here, its digest."""

    path: str
    source: Path
    sha256: str
    size_bytes: int

    @property
    def info(self) -> FileInfo:
        return FileInfo(self.path, self.sha256, self.size_bytes)


def plan_upload(model_path: Path, extra: dict[str, Path] | None = None) -> list[LocalFile]:
    """model.onnx (from `model_path`) and the external-data files it references.

    Locations that point outside the model's directory or do not exist are left
    out; the registry then rejects the upload and says which one.
    """
    if not model_path.is_file():
        raise InvalidArgument(f"{model_path}: no such file")
    files = {MAIN_FILE: model_path}
    if extra is None:
        # Imported here so that clients that never upload do not load onnx.
        import onnx

        from services.registry.validation import external_data_locations

        try:
            model = onnx.load(str(model_path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - let the registry judge an unparsable file
            del exc
        else:
            extra = {}
            base = model_path.parent.resolve()
            for location in external_data_locations(model):
                rel = posixpath.normpath(location.replace("\\", "/"))
                local = (base / rel).resolve()
                if local.is_file() and local.is_relative_to(base) and rel != MAIN_FILE:
                    extra[rel] = local
    files.update(extra or {})
    planned = []
    for path, source in files.items():
        sha256, size = sha256_file(source)
        planned.append(LocalFile(path, source, sha256, size))
    return planned


def read_file_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    """A file's contents in chunks."""
    with path.open("rb") as handle:
        while data := handle.read(chunk_size):
            yield data


class DownloadWriter:
    """Writes a download into a staging directory next to `dest`, verifies, then moves.

    Files appear in `dest` only after every file matched its sha256 and size.
    """

    def __init__(self, dest: Path, version: Version) -> None:
        self.dest = dest
        self.version = version
        self._expected = {f.path: f for f in version.files}
        dest.mkdir(parents=True, exist_ok=True)
        self._staging = dest / f".download-{uuid.uuid4().hex}"
        self._staging.mkdir()
        self._open: dict[str, tuple[BinaryIO, hashlib._Hash, int]] = {}

    def write(self, file: str, data: bytes) -> None:
        """Append a chunk to `file` (a path the registry announced)."""
        path = names.file_path(file)
        expected = self._expected.get(path)
        if expected is None:
            raise IntegrityError(
                f"download sent file {path!r}, expected one of {sorted(self._expected)}"
            )
        if path not in self._open:
            target = self._staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            self._open[path] = (target.open("xb"), hashlib.sha256(), 0)
        handle, digest, size = self._open[path]
        size += len(data)
        if size > expected.size_bytes:
            raise IntegrityError(
                f"file {path!r}: received more than the announced {expected.size_bytes} bytes"
            )
        handle.write(data)
        digest.update(data)
        self._open[path] = (handle, digest, size)

    def commit(self) -> list[Path]:
        """Verify every file and move them into `dest`; the final paths."""
        final = []
        for path, expected in self._expected.items():
            if path not in self._open:
                self._open[path] = ((self._staging / path).open("xb"), hashlib.sha256(), 0)
            handle, digest, size = self._open[path]
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            if size != expected.size_bytes or digest.hexdigest() != expected.sha256:
                raise IntegrityError(
                    f"file {path!r}: expected sha256 {expected.sha256} and {expected.size_bytes} "
                    f"bytes, got {digest.hexdigest()} and {size} bytes"
                )
        for path in self._expected:
            target = self.dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staging / path, target)
            final.append(target)
        fsync_dir(self.dest)
        self.abort()
        return final

    def abort(self) -> None:
        """Drop everything written so far."""
        for handle, _, _ in self._open.values():
            handle.close()
        self._open.clear()
        shutil.rmtree(self._staging, ignore_errors=True)
