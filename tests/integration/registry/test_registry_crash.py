"""Restart and SIGKILL: the registry as a real process on its data directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.registry.client import RegistryClient
from tests.integration.registry.conftest import ADMIN
from tests.servers import ROOT, ServiceProcess
from tests.unit.registry.registry_onnx import add_model, save, save_external

ENV = {"MAAS_REGISTRY_ADMIN_TOKEN": ADMIN, "MAAS_REGISTRY_GRACE_SECONDS": "1"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop()


def start(processes: list[ServiceProcess], data_dir: Path, tmp_path: Path) -> ServiceProcess:
    proc = ServiceProcess("registry", ["--data-dir", str(data_dir)], tmp_path, env=ENV)
    processes.append(proc)
    return proc


def integrity(data_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.registry.main",
            "--check",
            "--verify-hashes",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stdout)
    assert (done.returncode == 0) == report["ok"], done.stderr
    return report  # type: ignore[no-any-return]


async def test_restart_keeps_everything(
    processes: list[ServiceProcess], data_dir: Path, tmp_path: Path
) -> None:
    first = start(processes, data_dir, tmp_path)
    ext = save_external(tmp_path / "src")
    async with RegistryClient(first.address, ADMIN) as client:
        await client.upload("m", save(add_model(), tmp_path / "a.onnx"))
        await client.upload("m", ext, alias="production", config="instances: 1\n")
        revision = (await client.list_models()).revision
    first.stop()
    assert first.process.returncode == 0, first.logs()

    second = start(processes, data_dir, tmp_path)
    async with RegistryClient(second.address, ADMIN) as client:
        models = await client.list_models()
        assert models.revision == revision
        assert [(m.name, m.latest_version, m.aliases) for m in models.items] == [
            ("m", 2, {"production": 2})
        ]
        version = await client.resolve("m")
        assert (version.version, version.config) == (2, "instances: 1\n")
        await client.download("m", "production", tmp_path / "out")
        assert (tmp_path / "out" / "model.onnx").read_bytes() == ext.read_bytes()
        events = []
        async for event in client.watch(0):
            events.append(event)
            if event.revision == revision:
                break
        assert len(events) == revision
    assert integrity(data_dir)["ok"]


async def test_sigkill_mid_upload_leaves_nothing(
    processes: list[ServiceProcess], data_dir: Path, tmp_path: Path
) -> None:
    proc = start(processes, data_dir, tmp_path)
    async with RegistryClient(proc.address, ADMIN) as client:
        await client.upload("kept", save(add_model(), tmp_path / "kept.onnx"))
    staging = data_dir / "blobs" / "tmp"
    declared = 8 << 20
    hold = asyncio.Event()

    async def requests() -> AsyncIterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(
            metadata=pb.UploadMetadata(model="lost", sha256="0" * 64, size_bytes=declared)
        )
        for _ in range(3):
            yield pb.UploadVersionRequest(chunk=pb.FileChunk(data=b"\1" * (1 << 20)))
        await hold.wait()

    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        call = stub.UploadVersion(requests(), metadata=(("authorization", f"Bearer {ADMIN}"),))
        for _ in range(200):
            partial = [p for p in staging.rglob("*") if p.is_file()]
            if partial and partial[0].stat().st_size >= 3 << 20:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the upload never reached the staging area")
        proc.kill()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        hold.set()

    leftovers = integrity(data_dir)
    assert leftovers["ok"] and leftovers["staging"]  # the crash left a partial upload

    again = start(processes, data_dir, tmp_path)
    async with RegistryClient(again.address, ADMIN) as client:
        assert [m.name for m in (await client.list_models()).items] == ["kept"]
        assert [v.version for v in (await client.list_versions("kept")).items] == [1]
    report = integrity(data_dir)
    assert report["ok"] and report["staging"] == [] and report["orphans"] == []
    assert report["files"] == report["blobs"] == 1
    blob = next((data_dir / "blobs" / "sha256").rglob("*/*"))
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
