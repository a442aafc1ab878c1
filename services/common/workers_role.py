"""The worker's side of `--workers N`: told by its supervisor, it reports once serving."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass

REPORT_ENV = "MAAS_WORKER_REPORT_FD"
INDEX_ENV = "MAAS_WORKER_INDEX"


@dataclass(frozen=True)
class WorkerRole:
    """A worker of a supervisor: which one, and the pipe it reports on."""

    index: int
    report_fd: int

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> WorkerRole | None:
        """The role the supervisor passed (read in main), or None for a plain service."""
        fd, index = environ.pop(REPORT_ENV, None), environ.pop(INDEX_ENV, None)
        if not fd or index is None:
            return None
        try:
            os.fstat(int(fd))
        except (OSError, ValueError):
            return None  # a stale value from some other process's environment
        return cls(int(index), int(fd))

    def report(self, **ports: int) -> None:
        """Tell the supervisor this worker serves, and where its private metrics are."""
        line = json.dumps({"pid": os.getpid(), **ports}) + "\n"
        try:
            os.write(self.report_fd, line.encode())
        finally:
            os.close(self.report_fd)
