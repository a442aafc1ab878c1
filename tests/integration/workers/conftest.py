"""`--workers` fixtures: a supervisor started in-process through its public start(),
its workers real `python -m services.<service>.main` processes on one port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.workers import SharedPort, Supervisor
from services.inference.settings import InferenceSettings
from tests.integration.workers.helpers import StartSupervisor


@pytest.fixture
async def start_supervisor() -> AsyncIterator[StartSupervisor]:
    """`await start(settings, argv, ports)`; every supervisor is shut down at the end."""
    started: list[Supervisor] = []

    async def start(
        service: str, settings: Any, argv: list[str], ports: list[SharedPort]
    ) -> Supervisor:
        supervisor = Supervisor(service, settings, argv, ports)
        started.append(supervisor)
        await supervisor.start()
        return supervisor

    yield start
    for supervisor in started:
        await supervisor.shutdown(0)


@pytest.fixture
async def inference_workers(
    make_repository: Callable[..., Path], tmp_path: Path, start_supervisor: StartSupervisor
) -> Supervisor:
    """maas-inference --workers 2 serving `cnn` and `slow` (unbatched: each request
    keeps its worker's instance busy), on port 0."""
    repository = make_repository("cnn", "slow")
    (repository / "slow" / "config.yaml").write_text(
        "dynamic_batching: {enabled: false, max_batch_size: 2048}"
    )
    settings = InferenceSettings(
        host="localhost",
        port=0,
        metrics_port=0,
        workers=2,
        grace_seconds=30,
        port_file=str(tmp_path / "port"),
        model_repository=str(repository),
    )
    argv = ["--model-repository", str(repository), "--grace-seconds", "30"]
    return await start_supervisor(
        "inference", settings, argv, [SharedPort("port", 0, settings.port_file)]
    )
