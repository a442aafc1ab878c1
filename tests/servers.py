"""Services under test as real processes: `--port 0`, bound port read from --port-file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """One maas service started as `python -m services.<name>.main`."""

    def __init__(
        self, service: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.service = service
        self.port_file = workdir / f"{service}-{time.monotonic_ns()}.port"
        self.log_path = workdir / f"{service}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            f"services.{service}.main",
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.port = self._wait_for_port()

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"localhost:{self.port}"

    def _wait_for_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                return int(self.port_file.read_text())
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited early:\n{self.logs()}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"{self.service} did not start in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """Send SIGTERM (graceful drain)."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and return the exit code."""
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, no cleanup."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Terminate, and kill if it does not exit in time."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
