"""Receiving an upload: stage, verify digests, validate, then hand over for commit.

Files are streamed into a private staging directory on the blob store's
filesystem, hashed on the way, and fsynced. Nothing becomes visible here: the
caller moves the files into the blob store and inserts the version in one
transaction only after `receive` returned.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from services.common.errors import InvalidArgument
from services.common.files import fsync_file
from services.common.yamltext import load_mapping
from services.registry import names
from services.registry.domain import MAIN_FILE, FileInfo


def check_config(text: str) -> str:
    """`text` unchanged if it is empty or YAML that parses as a mapping."""
    load_mapping(text, source="config")
    return text


@dataclass(frozen=True)
class UploadMetadata:
    """The first message of an upload: what is coming and what it must hash to."""

    model: str
    sha256: str
    size_bytes: int
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    extra_files: tuple[FileInfo, ...] = ()
    config: str = ""
    alias: str = ""


@dataclass(frozen=True)
class Chunk:
    """Part of one file; an empty `file` means model.onnx."""

    file: str
    data: bytes


UploadPart = UploadMetadata | Chunk


def check_metadata(meta: UploadMetadata, *, max_bytes: int) -> dict[str, FileInfo]:
    """Check the first message; every declared file by path."""
    names.model_name(meta.model)
    names.description(meta.description)
    names.labels(meta.labels)
    check_config(meta.config)
    if meta.alias:
        names.alias_name(meta.alias)
    if meta.size_bytes <= 0:
        raise InvalidArgument(
            f"{MAIN_FILE}: declared size_bytes must be > 0, got {meta.size_bytes}"
        )
    main = FileInfo(MAIN_FILE, names.sha256_hex(meta.sha256, what=MAIN_FILE), meta.size_bytes)
    declared = {MAIN_FILE: main}
    for extra in meta.extra_files:
        path = names.file_path(extra.path)
        if path in declared:
            raise InvalidArgument(f"file {path!r} is declared twice, expected once")
        if extra.size_bytes < 0:
            raise InvalidArgument(f"file {path!r}: size_bytes must be >= 0, got {extra.size_bytes}")
        declared[path] = FileInfo(path, names.sha256_hex(extra.sha256, what=path), extra.size_bytes)
    for path in declared:
        if any(other.startswith(f"{path}/") for other in declared):
            raise InvalidArgument(f"file {path!r} is also declared as a directory, expected one")
    total = sum(f.size_bytes for f in declared.values())
    if total > max_bytes:
        raise InvalidArgument(
            f"upload too large: declares {total} bytes, expected at most {max_bytes} bytes"
        )
    return declared


class _StagedFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        self.handle: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("xb")
        self.handle.write(data)
        self.digest.update(data)

    def seal(self) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        else:
            self.handle.flush()
            self.handle.close()
            self.handle = None
        fsync_file(self.path)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


async def receive(
    parts: AsyncIterator[UploadPart], staging: Path, *, max_bytes: int
) -> tuple[UploadMetadata, tuple[FileInfo, ...]]:
    """Stream an upload into `staging`; the metadata and the verified files.

    Raises InvalidArgument as soon as something is wrong: a file longer than
    declared, an undeclared file, or a digest or size mismatch at the end.
    """
    first = await anext(parts, None)
    if not isinstance(first, UploadMetadata):
        got = "nothing" if first is None else "a chunk"
        raise InvalidArgument(f"upload: expected metadata as the first message, got {got}")
    declared = check_metadata(first, max_bytes=max_bytes)
    staged = {path: _StagedFile(staging / path) for path in declared}
    try:
        async for part in parts:
            if not isinstance(part, Chunk):
                raise InvalidArgument(
                    "upload: expected only chunks after the metadata, got metadata"
                )
            await _write(part, declared, staged)
        for entry in staged.values():
            await asyncio.to_thread(entry.seal)
        return first, _verify(declared, staged)
    finally:
        for entry in staged.values():
            entry.close()


async def _write(
    chunk: Chunk, declared: dict[str, FileInfo], staged: dict[str, _StagedFile]
) -> None:
    path = names.file_path(chunk.file)
    entry = staged.get(path)
    if entry is None:
        raise InvalidArgument(
            f"chunk for file {path!r} that the metadata does not declare: "
            f"expected one of {sorted(declared)}"
        )
    limit = declared[path].size_bytes
    entry.size += len(chunk.data)
    if entry.size > limit:
        raise InvalidArgument(
            f"file {path!r}: size mismatch: declared {limit} bytes, received more "
            f"({entry.size} so far)"
        )
    if chunk.data:
        await asyncio.to_thread(entry.write, chunk.data)


def _verify(declared: dict[str, FileInfo], staged: dict[str, _StagedFile]) -> tuple[FileInfo, ...]:
    files = []
    for path, expected in declared.items():
        entry = staged[path]
        if entry.size != expected.size_bytes:
            raise InvalidArgument(
                f"file {path!r}: size mismatch: declared {expected.size_bytes} bytes, "
                f"received {entry.size}"
            )
        got = entry.digest.hexdigest()
        if got != expected.sha256:
            raise InvalidArgument(
                f"file {path!r}: sha256 mismatch: expected {expected.sha256}, got {got}"
            )
        files.append(FileInfo(path, got, entry.size))
    return tuple(sorted(files, key=lambda f: f.path))
