"""Containers of the image under test, driven through the Docker CLI.

Every container runs as the chart runs it: host networking (this machine has no
bridge), a read-only root filesystem, user 10001, and tmpfs for each path the
services write. Names carry the test process's pid and a random part, so that
parallel runs and a host `make run` never meet, and a `ContainerSet` removes all
it started, also when a test fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

USER = "10001:10001"
# The writable paths of the image (its volumes); everything else is read-only.
WRITABLE = ("/tmp", "/var/lib/maas/registry", "/var/cache/maas")
# The ports `make run` and the services' defaults use: a test must never take them.
DEFAULT_PORTS = frozenset({8000, 8001, 8011, 8021, 9001, 9011, 9021})


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS has free on 127.0.0.1 now.

    The services bind inside containers, so the test cannot hand them a bound
    socket: all sockets are held open together (so the ports differ) and closed
    just before the containers start.
    """
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in DEFAULT_PORTS:
                ports.append(port)
        return ports


def grpc_serving(address: str, timeout: float = 2.0) -> bool:
    """Whether grpc.health.v1 at `address` says SERVING for the whole server."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout:.0f} s")
        time.sleep(0.2)


def cli(docker: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """One Docker CLI command, its output captured; the caller checks the status."""
    return subprocess.run(
        [docker, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Container:
    """One detached container of the image, known by its unique name."""

    docker: str
    name: str

    def _cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return cli(self.docker, *args, timeout=timeout)

    def state(self) -> str:
        """Docker's status word: running, exited, ..., or `missing`."""
        result = self._cli("inspect", "--format", "{{.State.Status}}", self.name)
        return result.stdout.strip() if result.returncode == 0 else "missing"

    def exit_code(self) -> int:
        """The exit status of a container that has stopped."""
        result = self._cli("inspect", "--format", "{{.State.ExitCode}}", self.name)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    def logs(self, tail: int = 40) -> str:
        """Its last `tail` lines of stdout and stderr together."""
        result = self._cli("logs", "--tail", str(tail), self.name)
        return result.stdout + result.stderr

    def records(self) -> list[dict[str, object]]:
        """Its structured (JSON-lines) log records so far; other lines are skipped."""
        result = self._cli("logs", self.name)
        records = []
        for line in (result.stdout + result.stderr).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def stop(self, grace: int) -> None:
        """`docker stop`: SIGTERM, and SIGKILL only after `grace` seconds."""
        result = self._cli("stop", "-t", str(grace), self.name, timeout=grace + 60)
        assert result.returncode == 0, result.stderr

    def kill(self) -> None:
        """`docker kill`: SIGKILL, no drain."""
        result = self._cli("kill", self.name)
        assert result.returncode == 0, result.stderr

    def remove(self) -> None:
        self._cli("rm", "-f", "-v", self.name)

    def wait_serving(self, what: str, ready: Callable[[], bool], timeout: float = 90.0) -> None:
        """Poll `ready` until it holds, failing at once (with the logs) if the container exits."""

        def check() -> bool:
            state = self.state()
            assert state == "running", f"{self.name} is {state}:\n{self.logs()}"
            return ready()

        wait_until(f"{self.name} {what}", check, timeout)


@dataclass
class ContainerSet:
    """The containers one test module started; `close()` removes them all."""

    docker: str
    image: str
    prefix: str = field(default_factory=lambda: f"maas-it-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    started: list[Container] = field(default_factory=list)

    def run(self, role: str, command: list[str], env: dict[str, str] | None = None) -> Container:
        """Start `command` of the image detached, hardened as the chart runs it."""
        container = Container(self.docker, f"{self.prefix}-{role}")
        self.started.append(container)  # before the run: a half-started one is removed too
        args = ["run", "-d", "--name", container.name, "--network", "host", "--read-only"]
        args += ["--user", USER]
        for path in WRITABLE:
            # tmpfs mounts are root's 0755 by default; the service user must own them.
            args += ["--tmpfs", f"{path}:uid=10001,gid=10001,mode=0700"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        result = cli(self.docker, *args, self.image, *command, timeout=120)
        assert result.returncode == 0, f"docker run {role}: {result.stderr}"
        return container

    def logs(self, tail: int = 40) -> str:
        """Every container's last lines, each under a header naming it."""
        return "\n".join(
            f"----- {c.name} ({c.state()}) -----\n{c.logs(tail)}" for c in self.started
        )

    def close(self) -> None:
        for container in self.started:
            container.remove()
