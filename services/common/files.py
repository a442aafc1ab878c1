"""Durable file writes and file digests, shared by every service and tool."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

_READ = 1 << 20


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or unlink in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old file or the whole new one,
    even if the process (or the machine) stops part way."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_of(handle: BinaryIO) -> tuple[str, int]:
    """(hex sha256, size) of what is left to read in an open binary file."""
    digest, size = hashlib.sha256(), 0
    while data := handle.read(_READ):
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file."""
    with path.open("rb") as handle:
        return sha256_of(handle)
