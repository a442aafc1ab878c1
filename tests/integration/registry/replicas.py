"""Registry replicas for tests: SeaweedFS (S3) and PostgreSQL fixtures, and
`maas-registry` processes that share one database and one bucket.

Reusable by any registry test that needs more than one replica: import the
fixtures (`s3`, `s3_env`, `bucket`) and call `start_replica`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.registry.conftest import ADMIN, READER
from tests.s3server import SeaweedS3, seaweed_s3
from tests.servers import ROOT, ServiceProcess
from tests.unit.registry.registry_pg import fresh_schema


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the test module."""
    with seaweed_s3() as server:
        yield server


@pytest.fixture
def s3_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables for `s3`, set in this process too (for in-process registries)."""
    env = s3.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    """A new, empty bucket."""
    return s3.bucket()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema; skipped when no server can be had."""
    with fresh_schema() as url:
        yield url


class Replica(ServiceProcess):
    """A `maas-registry` process; uploads are staged under `data_dir`/blobs/tmp."""

    def __init__(self, data_dir: Path, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        super().__init__("registry", ["--data-dir", str(data_dir), *args], workdir, env=env)

    @property
    def staging(self) -> Path:
        return self.data_dir / "blobs" / "tmp"


@dataclass
class Cluster:
    """Where replicas keep their state: one database, one bucket, their own data dirs."""

    database_url: str
    blob_url: str
    env: dict[str, str]
    workdir: Path
    replicas: list[Replica] = field(default_factory=list)

    def settings_env(self) -> dict[str, str]:
        return {
            **self.env,
            "MAAS_REGISTRY_ADMIN_TOKEN": ADMIN,
            "MAAS_REGISTRY_READER_TOKEN": READER,
            "MAAS_REGISTRY_DATABASE_URL": self.database_url,
            "MAAS_REGISTRY_BLOB_URL": self.blob_url,
            "MAAS_REGISTRY_GRACE_SECONDS": "1",
            "MAAS_REGISTRY_WATCH_POLL_SECONDS": "0.2",
        }

    def start_replica(self, *args: str, env: dict[str, str] | None = None) -> Replica:
        """A new `maas-registry` process with a data dir (staging) of its own."""
        data_dir = self.workdir / f"replica-{len(self.replicas)}"
        proc = Replica(data_dir, list(args), self.workdir, {**self.settings_env(), **(env or {})})
        self.replicas.append(proc)
        return proc

    def registry_command(self, *args: str) -> dict[str, Any]:
        """Run `maas-registry ARGS` once (--gc, --check) on the shared state; its JSON."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.registry.main",
                "--data-dir",
                str(self.workdir / "cli"),
                "--log-level",
                "WARNING",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, **self.settings_env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for proc in self.replicas:
            proc.stop()


@pytest.fixture
def cluster(
    s3: SeaweedS3, s3_env: dict[str, str], bucket: str, pg_url: str, tmp_path: Path
) -> Iterator[Cluster]:
    """Replicas on one PostgreSQL schema and one bucket (prefix `models`); stopped at the end."""
    made = Cluster(pg_url, f"s3://{bucket}/models", s3_env, tmp_path)
    try:
        yield made
    finally:
        made.stop()


def keys(s3: SeaweedS3, bucket: str) -> list[str]:
    """Every object key in `bucket`."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def incomplete_uploads(s3: SeaweedS3, bucket: str) -> list[str]:
    """Keys of the multipart uploads begun and not finished in `bucket`."""
    reply = s3.client().list_multipart_uploads(Bucket=bucket)
    return sorted(item["Key"] for item in reply.get("Uploads", []))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
