"""`--workers` fixtures: a supervisor started in-process through its public start(),
its workers real `python -m services.<service>.main` processes on one port."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from services.common.workers import SharedPort, Supervisor
from services.inference.settings import InferenceSettings
from tests.integration.workers.helpers import HELD_SECONDS, StartSupervisor
from tests.models import Slow, export


@pytest.fixture
async def start_supervisor() -> AsyncIterator[StartSupervisor]:
    """`await start(service, settings, argv, ports, **Supervisor's options)`; every
    supervisor is shut down at the end."""
    started: list[Supervisor] = []

    async def start(
        service: str, settings: Any, argv: list[str], ports: list[SharedPort], **options: Any
    ) -> Supervisor:
        supervisor = Supervisor(service, settings, argv, ports, **options)
        started.append(supervisor)
        await supervisor.start()
        return supervisor

    yield start
    for supervisor in started:
        await supervisor.shutdown(0)


class SlowSum(torch.nn.Module):
    """The test `slow` model's work with one number per row out: a request stays in
    flight a while, and its answer is small (a 2 MB answer still being read when
    the worker closes its connections can be cut off by the TCP reset that follows)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = Slow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slow(x).sum(dim=1, keepdim=True)


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SlowSum exported from PyTorch once per session."""
    path = tmp_path_factory.mktemp("slow") / "model.onnx"
    export(SlowSum(), (torch.ones(2, 1024),), ["x"], ["y"], path)
    return path


@pytest.fixture
async def inference_workers(
    make_repository: Callable[..., Path],
    slow_model: Path,
    tmp_path: Path,
    start_supervisor: StartSupervisor,
) -> Supervisor:
    """maas-inference --workers 2 serving `cnn` and `slow` (SlowSum, unbatched: each
    request keeps its worker's instance busy), on port 0."""
    repository = make_repository("cnn")
    (repository / "slow" / "1").mkdir(parents=True)
    shutil.copy(slow_model, repository / "slow" / "1" / "model.onnx")
    (repository / "slow" / "config.yaml").write_text(
        "dynamic_batching: {enabled: false, max_batch_size: 2048}"
    )
    # `held`: the CNN behind a batcher that waits HELD_SECONDS for a batch that never
    # fills, so every request stays in flight that long, whatever the machine's speed.
    shutil.copytree(repository / "cnn", repository / "held")
    (repository / "held" / "config.yaml").write_text(
        f"dynamic_batching: {{max_batch_size: 1024, max_queue_delay_us: {HELD_SECONDS * 10**6}}}"
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
