"""Only one supervisor's workers share a port: a second supervisor, or a plain server,
on the same port fails with 'port in use', never joins; SIGTERM to a supervisor
process drains its workers and exits 0."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from services.common.server import PortInUse
from services.common.workers import SharedPort, Supervisor
from services.common.workers_ports import lock_path
from services.inference.main import InferenceServer
from services.inference.settings import InferenceSettings
from tests.integration.workers.helpers import (
    StartSupervisor,
    cnn_request,
    connection,
    per_worker,
    samples,
    stub,
)
from tools.processes import ServiceProcess


def settings_at(port: int, repository: Path, **overrides: object) -> InferenceSettings:
    return InferenceSettings(
        host="localhost",
        port=port,
        metrics_port=0,
        model_repository=str(repository),
        grace_seconds=0,
        **overrides,  # type: ignore[arg-type]
    )


async def run_to_end(*args: str) -> tuple[int, str]:
    """`python -m services.inference.main ARGS` run to its exit: status and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.inference.main",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_second_supervisor_or_a_plain_server_never_joins(
    inference_workers: Supervisor, make_repository: object, tmp_path: Path
) -> None:
    port = inference_workers.bound["port"]
    repository = Path(inference_workers.argv[1])
    assert lock_path(port).exists()
    # In-process: a second supervisor on the port.
    second = Supervisor(
        "inference",
        settings_at(port, repository, workers=2),
        ["--model-repository", str(repository)],
        [SharedPort("port", port, None)],
    )
    with pytest.raises(PortInUse, match=f"port {port} is in use"):
        await second.start()
    # A plain single-process server on the port.
    plain = InferenceServer(settings_at(port, repository))
    with pytest.raises(PortInUse, match=f"port {port} is in use"):
        await plain.start()
    # The same as processes: one line, status 2, nothing started.
    for extra in (["--workers", "2"], []):
        code, err = await run_to_end(
            "--model-repository", str(repository), "--host", "localhost",
            "--port", str(port), "--metrics-port", "0", *extra,
        )  # fmt: skip
        assert code == 2, err
        assert f"port {port} is in use (change it with --port or MAAS_INFERENCE_PORT)" in err
    # The first supervisor's two workers still take every connection.
    for _ in range(8):
        async with connection(port) as channel:
            await stub(channel).ModelInfer(cnn_request())
    calls = per_worker(
        await samples(inference_workers.metrics_port), "maas_worker_grpc_requests_total"
    )
    assert sum(calls.values()) >= 8
    assert set(calls) == {"0", "1"}


async def test_a_supervisor_with_a_busy_port_starts_no_worker(
    make_repository: object, start_supervisor: StartSupervisor, test_models: Path
) -> None:
    plain = InferenceServer(settings_at(0, test_models))
    port = await plain.start()
    try:
        settings = settings_at(port, test_models, workers=2)
        with pytest.raises(PortInUse):
            await start_supervisor(
                "inference", settings, ["--model-repository", str(test_models)],
                [SharedPort("port", port, None)],
            )  # fmt: skip
    finally:
        await plain.shutdown(0)


def test_sigterm_to_the_supervisor_process_exits_0(test_models: Path, tmp_path: Path) -> None:
    process = ServiceProcess(
        "inference",
        ["--workers", "2", "--model-repository", str(test_models), "--host", "localhost"],
        log_path=tmp_path / "log",
        port_file=tmp_path / "port",
    )
    try:
        process.wait_for_port()
        process.terminate()
        assert process.wait(60) == 0, process.logs()[-4000:]
        assert "2 workers listening" in process.logs()
    finally:
        process.stop()


async def test_workers_with_require_cuda_are_refused(test_models: Path) -> None:
    # Each worker would load every model onto the GPU: one process per GPU for now.
    code, err = await run_to_end(
        "--model-repository", str(test_models), "--workers", "2", "--require-cuda",
        "--port", "0", "--metrics-port", "0",
    )  # fmt: skip
    assert code == 2
    assert "--workers above 1 with --require-cuda" in err
