"""No blocking file work on the inference event loop (issue A, defect 6).

An audit hook records file events (open, rename/replace, listdir/scandir, rmtree)
on the paths of the test that happen on the event loop's thread, while real servers
scan a repository, reload a model, follow the registry, download and write the
cache's state file. Every one of them must run on a worker thread.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from services.registry.client import RegistryClient
from services.registry.main import create_server
from services.registry.settings import RegistrySettings

WATCHED = {"open", "os.rename", "os.listdir", "os.scandir", "shutil.rmtree", "os.remove"}


@dataclass
class Recorder:
    """File events on `root` made by the thread `thread`."""

    root: str
    thread: int
    events: list[tuple[str, str]] = field(default_factory=list)


_active: list[Recorder] = []
_hooked = False


def _hook(event: str, args: tuple[object, ...]) -> None:
    if not _active or event not in WATCHED:
        return
    recorder = _active[-1]
    if threading.get_ident() != recorder.thread or not args:
        return
    path = str(args[0])
    if path.startswith(recorder.root):
        recorder.events.append((event, path))


@pytest.fixture
def on_loop(tmp_path: Path) -> Iterator[Recorder]:
    """Records the test's file events on this (the event loop's) thread."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_hook)  # audit hooks cannot be removed; it is idle between tests
        _hooked = True
    recorder = Recorder(str(tmp_path), threading.get_ident())
    _active.append(recorder)
    yield recorder
    _active.remove(recorder)


async def test_directory_mode_scans_and_loads_off_the_loop(
    test_models: Path, tmp_path: Path, on_loop: Recorder
) -> None:
    root = tmp_path / "repository"
    shutil.copytree(test_models / "pair", root / "pair")
    (root / "pair" / "config.yaml").write_text("instances: 1\n")
    on_loop.events.clear()
    server = InferenceServer(
        InferenceSettings(port=0, metrics_port=0, model_repository=str(root), grace_seconds=0)
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="pair"))
            assert (await stub.ModelReady(pb.ModelReadyRequest(name="pair"))).ready
    finally:
        await server.shutdown(0)
    assert on_loop.events == []


async def test_registry_mode_downloads_and_saves_state_off_the_loop(
    test_models: Path, tmp_path: Path, on_loop: Recorder
) -> None:
    registry = await create_server(
        RegistrySettings(
            data_dir=tmp_path / "registry",
            port=0,
            metrics_port=0,
            admin_token="admin",
            reader_token="reader",
            grace_seconds=0,
            watch_poll_seconds=0.05,
        )
    )
    await registry.start()
    address = f"localhost:{registry.server.port}"
    cache = tmp_path / "cache"
    try:
        async with RegistryClient(address, "admin") as admin:
            await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
            on_loop.events = [e for e in on_loop.events if not e[1].startswith(str(cache))]
            server = InferenceServer(
                InferenceSettings(
                    port=0,
                    metrics_port=0,
                    registry=address,
                    registry_token="reader",
                    cache_dir=str(cache),
                    grace_seconds=0,
                )
            )
            await server.start()
            try:
                await admin.upload("pair", test_models / "pair" / "1" / "model.onnx")
                await admin.set_alias("pair", "production", 2)
                revision = (await admin.snapshot()).revision
                assert server.follower is not None
                async with asyncio.timeout(10):
                    while (server.follower.revision or 0) < revision:
                        await asyncio.sleep(0.01)
                assert server.manager.aliases("pair") == {"production": 2}
            finally:
                await server.shutdown(0)
    finally:
        await registry.stop(0)
    assert [e for e in on_loop.events if e[1].startswith(str(cache))] == []
