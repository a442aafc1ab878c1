"""Which runner a session gets (plain run or CUDA IO binding), decided without a GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.common.datatypes import by_name
from services.inference.binding import IoBindingRunner
from services.inference.config import ModelConfig, parse_config
from services.inference.model import make_runner
from services.inference.runtime import (
    RunnerPlan,
    Signature,
    TensorSpec,
    runner_plan,
    session_options,
)

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ON_GPU1 = RunnerPlan("iobinding", "cuda", 1, pinned_inputs=True)


def signature(datatype: str = "FP32") -> Signature:
    spec = TensorSpec("x", by_name(datatype, tensor="x"), (-1, 3))
    return Signature((spec,), (TensorSpec("y", spec.datatype, (-1, 3)),))


@pytest.mark.parametrize(
    ("active", "text", "datatype", "expected"),
    [
        ([CPU], "", "FP32", RunnerPlan("run")),
        ([CUDA, CPU], "", "FP32", RunnerPlan("iobinding", "cuda", 0, pinned_inputs=True)),
        ([TRT, CUDA, CPU], "cuda: {device_id: 1}", "FP32", ON_GPU1),
        ([CUDA, CPU], "cuda: {io_binding: false}", "FP32", RunnerPlan("run")),
        ([CUDA, CPU], "cuda: {pinned_inputs: false}", "FP32", RunnerPlan("iobinding", "cuda")),
        ([CUDA, CPU], "", "BYTES", RunnerPlan("run")),
    ],
)
def test_runner_plan(active: list[str], text: str, datatype: str, expected: RunnerPlan) -> None:
    config = parse_config(text, source="config.yaml")
    assert runner_plan(active, config, signature(datatype)) == expected


class FakeBinding:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        self.log.append(("input", name, array.shape))

    def bind_output(self, name: str, device: str, device_id: int, *rest: Any) -> None:
        self.log.append(("output", name, device, device_id, tuple(rest[1])))

    def synchronize_outputs(self) -> None:
        self.log.append(("sync",))

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        raise AssertionError("outputs bound to host buffers need no copy")


class FakeSession:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.bindings = 0

    def io_binding(self) -> FakeBinding:
        self.bindings += 1
        return FakeBinding(self.log)

    def run_with_iobinding(self, binding: FakeBinding) -> None:
        self.log.append(("run",))


def test_io_binding_runner_writes_outputs_into_host_buffers_with_one_binding() -> None:
    session = FakeSession()
    plan = RunnerPlan("iobinding", "cuda", 1, pinned_inputs=False)
    runner = make_runner(session, signature(), plan)  # type: ignore[arg-type]
    assert isinstance(runner, IoBindingRunner) and not runner.pinned
    outputs = runner({"x": np.ones((2, 3), np.float32)})
    runner({"x": np.ones((2, 3), np.float32)})
    assert list(outputs) == ["y"] and outputs["y"].shape == (2, 3)
    assert session.bindings == 1
    assert session.log[:4] == [
        ("input", "x", (2, 3)),
        ("output", "y", "cpu", 0, (2, 3)),
        ("run",),
        ("sync",),
    ]
    # Without pinned memory, batch buffers are ordinary host arrays.
    assert runner.allocate((4, 3), np.dtype(np.float32)).shape == (4, 3)


def test_spinning_is_off_by_default_and_configurable() -> None:
    def spin(config: ModelConfig, cores: int) -> str:
        return session_options(config, cores).get_session_config_entry(
            "session.intra_op.allow_spinning"
        )

    assert spin(ModelConfig(), 2) == "0"  # the event loop needs a core as well
    assert spin(ModelConfig(threads={"intra_op": 1}), 4) == "1"  # type: ignore[arg-type]
    assert spin(parse_config("threads: {spinning: true}", source="c"), 2) == "1"


class FakeEpDevice:
    def __init__(self, ep_name: str, tag: str) -> None:
        self.ep_name, self.tag = ep_name, tag

    def memory_info(self, kind: object) -> str:
        return f"{self.tag}:{kind}"


def test_pinned_memory_comes_from_the_nth_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from services.inference.binding import pinned_memory_info

    devices = [
        FakeEpDevice("CPUExecutionProvider", "cpu"),
        FakeEpDevice("CUDAExecutionProvider", "gpu0"),
        FakeEpDevice("CUDAExecutionProvider", "gpu1"),
    ]
    monkeypatch.setattr(ort, "get_ep_devices", lambda: devices)
    assert str(pinned_memory_info(1)).startswith("gpu1:")
    assert pinned_memory_info(2) is None
    monkeypatch.setattr(ort, "get_ep_devices", lambda: [])
    assert pinned_memory_info(0) is None
