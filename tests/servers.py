"""Services under test as real processes: `--port 0`, bound port read from --port-file."""

from __future__ import annotations

import time
from pathlib import Path

from tools.processes import ServiceProcess as _ServiceProcess

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess(_ServiceProcess):
    """A maas service started in `workdir` and serving when the constructor returns."""

    def __init__(
        self, service: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        stamp = time.monotonic_ns()
        super().__init__(
            service,
            args,
            log_path=workdir / f"{service}-{stamp}.log",
            port_file=workdir / f"{service}-{stamp}.port",
            env=env,
            cwd=ROOT,
        )
        self.wait_for_port()

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
