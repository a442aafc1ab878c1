"""--event-loop: each service process runs on uvloop by default or on asyncio's own
loop, serves on either, and drains on SIGTERM on either (their signal handling differs)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from tests.servers import ServiceProcess


def twice(address: str, values: np.ndarray) -> np.ndarray:
    """dt_fp32 (y = [x, x] along dim 1) run through ModelInfer."""
    request = pb.ModelInferRequest(model_name="dt_fp32")
    request.inputs.add(name="x", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.astype(np.float32).tobytes())
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    shape = tuple(reply.outputs[0].shape)
    return np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(shape)


@pytest.mark.parametrize("flags", [[], ["--event-loop", "uvloop"], ["--event-loop", "asyncio"]])
def test_inference_serves_and_drains_on_the_loop_it_was_given(
    flags: list[str], test_models: Path, tmp_path: Path
) -> None:
    loop = flags[1] if flags else "uvloop"
    process = ServiceProcess(
        "inference", ["--model-repository", str(test_models), *flags], tmp_path
    )
    try:
        values = np.arange(6, dtype=np.float32).reshape(2, 3)
        got = twice(process.address, values)
        np.testing.assert_array_equal(got, np.concatenate([values, values], axis=1))
        process.terminate()
        assert process.wait(30) == 0
        assert f"running on the {loop} event loop" in process.logs()
    finally:
        process.stop()


def test_an_unknown_event_loop_is_refused_naming_the_choices(
    test_models: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as caught:
        ServiceProcess(
            "inference",
            ["--model-repository", str(test_models), "--event-loop", "trio"],
            tmp_path,
        )
    assert "invalid choice: 'trio' (choose from 'uvloop', 'asyncio')" in str(caught.value)


def test_the_environment_chooses_the_loop_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_INFERENCE_EVENT_LOOP", "asyncio")
    assert InferenceSettings().event_loop == "asyncio"
    assert GatewaySettings().event_loop == "uvloop"
    monkeypatch.setenv("MAAS_GATEWAY_EVENT_LOOP", "tokio")
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    assert "'uvloop' or 'asyncio'" in str(caught.value)
