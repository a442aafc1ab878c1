"""A throwaway redis-server for tests: 127.0.0.1 only, no persistence, in a temp dir.

Redis cannot bind port 0 and report it, so a free port is picked (and picked again
if another process takes it first). `stop()` and `start()` again reuse the port, so
clients configured with the URL see an outage and a recovery. Tests skip only when
the redis-server binary is absent.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.tlscerts import Ca

BINARY = "redis-server"
START_SECONDS = 10.0


def require_binary() -> str:
    """The redis-server path; pytest.skip when it is not installed."""
    found = shutil.which(BINARY)
    if found is None:
        pytest.skip(f"{BINARY} is not installed (Debian: apt-get install redis-server)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; `url` is what a client is given."""

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: Ca | None = None
    ) -> None:
        self.binary = require_binary()
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = directory / "redis.log"
        self._cert = tls.issue("redis-server") if tls is not None else None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={self.tls.cert}"

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is None or self._cert is None:
            return [*args, "--port", str(self.port)]
        return [
            *args,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self._cert.cert),
            "--tls-key-file",
            str(self._cert.key),
            "--tls-ca-cert-file",
            str(self.tls.cert),
            "--tls-auth-clients",
            "no",
        ]

    def _client(self) -> redis.Redis:
        options: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        if self.tls is not None:
            options["ssl_ca_certs"] = str(self.tls.cert)
        return redis.Redis.from_url(self.url.split("?")[0], **options)

    def start(self) -> None:
        """Start (again, on the same port once it has one) and wait for PING."""
        for _ in range(5):
            if not self.port:
                self.port = _free_port()
            with self._log.open("ab") as log:
                self.process = subprocess.Popen(
                    self._args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
                )
            if self._wait_ping():
                return
            self.stop()
            self.port = 0  # taken by someone else in between: another port
        raise RuntimeError(f"redis-server did not start: {self._log.read_text()[-2000:]}")

    def _wait_ping(self) -> bool:
        end = time.monotonic() + START_SECONDS
        client = self._client()
        try:
            while time.monotonic() < end:
                if self.process is None or self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); the port is kept for a restart."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def client(self) -> redis.Redis:
        """A synchronous client, for tests that look inside."""
        return self._client()


@contextlib.contextmanager
def running_redis(**options: Any) -> Iterator[RedisServer]:
    """A started RedisServer in its own temp dir; stopped and removed on exit."""
    require_binary()
    directory = Path(tempfile.mkdtemp(prefix="maas-redis-"))
    server = RedisServer(directory, **options)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
