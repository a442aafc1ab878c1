"""The worker's side of `--workers N`: told by its supervisor, it reports once serving."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass

REPORT_ENV = "MAAS_WORKER_REPORT_FD"
INDEX_ENV = "MAAS_WORKER_INDEX"
# A file every worker shares, when the service has one (the gateway's limits table).
SHARED_ENV = "MAAS_WORKER_SHARED_FD"


@dataclass(frozen=True)
class WorkerRole:
    """A worker of a supervisor: which one, the pipe it reports on, and the descriptor
    of the file its siblings share, if the supervisor made one."""

    index: int
    report_fd: int
    shared_fd: int | None = None

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] = os.environ) -> WorkerRole | None:
        """The role the supervisor passed (read in main), or None for a plain service."""
        fd, index = environ.pop(REPORT_ENV, None), environ.pop(INDEX_ENV, None)
        shared = environ.pop(SHARED_ENV, None)
        if not fd or index is None:
            return None
        try:
            os.fstat(int(fd))
            if shared:
                os.fstat(int(shared))
        except (OSError, ValueError):
            return None  # a stale value from some other process's environment
        return cls(int(index), int(fd), int(shared) if shared else None)

    def report(self, **ports: int) -> None:
        """Tell the supervisor this worker serves, and where its private metrics are."""
        line = json.dumps({"pid": os.getpid(), **ports}) + "\n"
        try:
            os.write(self.report_fd, line.encode())
        finally:
            os.close(self.report_fd)
