"""A maas service as a child process: started on a port (0 picks one), its bound
port read back from `--port-file`, its output in a log file, stopped gracefully.

Each child holds a lifeline (services/common/lifeline.py): when this process dies,
even by SIGKILL, its children stop too and free their ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.common.lifeline import LIFELINE_ENV


class ServiceDied(RuntimeError):
    """The service exited before it was serving."""


class ServiceProcess:
    """`python -m services.<service>.main --port P --port-file F ARGS...`."""

    def __init__(
        self,
        service: str,
        args: list[str],
        *,
        log_path: Path,
        port_file: Path,
        port: int = 0,
        metrics_port: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.service = service
        self.log_path = log_path
        self.port_file = port_file
        self.metrics_port = metrics_port
        self.port = 0
        # The gateway's HTTP port too, read back from its --http-port-file.
        self.http_port = 0
        self.http_port_file = port_file.with_name(port_file.name + ".http")
        self._args = args
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        # In a session of its own, Ctrl-C at a terminal reaches only the parent,
        # which stops its children in order.
        self._new_session = new_session
        self._lifeline: int | None = None
        self.process = self._launch(port)

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        self.port_file.unlink(missing_ok=True)
        self._cut_lifeline()
        command = [
            *self._command_prefix(),
            sys.executable,
            "-m",
            f"services.{self.service}.main",
            "--port",
            str(port),
            "--metrics-port",
            str(self.metrics_port),
            "--port-file",
            str(self.port_file),
            *self._http_args(port),
            *self._args,
        ]
        # Never written to: the child sees EOF once this process, and so the write end, is gone.
        read_end, write_end = os.pipe()
        try:
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    command,
                    cwd=self._cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**self._env, LIFELINE_ENV: str(read_end)},
                    pass_fds=(read_end,),
                    start_new_session=self._new_session,
                )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._lifeline = write_end
        return process

    def _command_prefix(self) -> list[str]:
        """What the command runs under (a subclass's `ip netns exec`); nothing here."""
        return []

    def _http_args(self, port: int) -> list[str]:
        """The gateway's HTTP flags: the port it had, or a free one when gRPC's is free too."""
        if self.service != "gateway":
            return []
        self.http_port_file.unlink(missing_ok=True)
        args = ["--http-port-file", str(self.http_port_file)]
        if self.http_port or not port:
            args += ["--http-port", str(self.http_port)]
        return args

    def _written(self) -> bool:
        files = [self.port_file] + ([self.http_port_file] if self.service == "gateway" else [])
        return all(f.exists() and f.read_text().strip() for f in files)

    def _cut_lifeline(self) -> None:
        """Close our end of the lifeline (the child then stops, if it has not)."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"localhost:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_port(self, timeout: float = 60.0) -> int:
        """The port it bound, once it is serving; ServiceDied or TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not self._written():
            if not self.alive():
                raise ServiceDied(f"{self.service} exited early:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"{self.service} did not start in {timeout:.0f}s:\n{self.logs()[-4000:]}"
                )
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        if self.service == "gateway":
            self.http_port = int(self.http_port_file.read_text())
        return self.port

    def restart(self) -> None:
        """Start it again on the port it had."""
        self.process = self._launch(self.port)

    def alive(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM: drain and stop."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for it to exit; its exit code."""
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, no cleanup."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self._cut_lifeline()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.alive():
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cut_lifeline()
