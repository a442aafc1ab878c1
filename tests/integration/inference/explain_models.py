"""Models and a client for the explanation tests: a linear model whose attributions are
known, and the digits CNN with its held-out split, both exported from PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.models import export
from tools import digits

LINEAR = "linear"
WEIGHTS = np.array([0.5, -1.25, 2.0, 0.75, -0.3, 1.1], dtype=np.float32)
BIAS = 0.2


class Linear(torch.nn.Module):
    """y = w.x + b over 6 features: [batch, 6] -> [batch, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(len(WEIGHTS), 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(WEIGHTS)[None])
            self.fc.bias.fill_(BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def build_linear(root: Path) -> Path:
    """root/linear/1/model.onnx (max_batch_size 32, the default)."""
    path = root / LINEAR / "1" / "model.onnx"
    export(Linear(), (torch.ones(2, len(WEIGHTS)),), ["x"], ["y"], path)
    return path


def build_digits(root: Path) -> Path:
    """root/digits/1/model.onnx trained by tools.digits; returns its held-out .npz."""
    result = digits.train_and_export(
        root / "digits" / "1" / "model.onnx", holdout_path=root / "digits_holdout.npz"
    )
    return result.holdout_path


def tensor_into(
    tensors: Any, raws: Any, name: str, array: np.ndarray, datatype: str = "FP32"
) -> None:
    """Append a raw FP32 (or `datatype`) tensor to a request's tensors and raw contents."""
    tensors.add(name=name, datatype=datatype, shape=list(array.shape))
    raws.append(np.ascontiguousarray(array).tobytes())


def explain_request(
    model: str,
    inputs: dict[str, np.ndarray],
    method: str,
    *,
    background: dict[str, np.ndarray] | None = None,
    output: str = "",
    target: int | None = None,
    **parameters: int | float,
) -> explain_pb2.ExplainRequest:
    """An ExplainRequest with raw FP32 tensors."""
    request = explain_pb2.ExplainRequest(model_name=model, method=method, output=output)
    if target is not None:
        request.target = target
    for name, array in inputs.items():
        tensor_into(request.inputs, request.raw_input_contents, name, array)
    for name, array in (background or {}).items():
        tensor_into(request.background, request.raw_background_contents, name, array)
    for name, value in parameters.items():
        if isinstance(value, float):
            request.parameters[name].double_param = value
        else:
            request.parameters[name].int64_param = value
    return request


def attributions(response: explain_pb2.ExplainResponse) -> dict[str, np.ndarray]:
    """The response's FP64 attributions by name, shaped."""
    return {
        t.name: np.frombuffer(raw, dtype=np.float64).reshape(list(t.shape))
        for t, raw in zip(response.attributions, response.raw_attribution_contents, strict=True)
    }


async def explain(
    channel: grpc.aio.Channel, request: explain_pb2.ExplainRequest
) -> explain_pb2.ExplainResponse:
    response: explain_pb2.ExplainResponse = await explain_pb2_grpc.ExplainerStub(channel).Explain(
        request, timeout=120
    )
    return response


async def infer(
    channel: grpc.aio.Channel, model: str, name: str, array: np.ndarray, output: str
) -> np.ndarray:
    """ModelInfer calls (32 rows each, the default max_batch_size) with a raw FP32
    input; the named output as float32, all rows."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    parts = []
    for start in range(0, len(array), 32):
        request = pb.ModelInferRequest(model_name=model)
        rows = array[start : start + 32].astype(np.float32)
        tensor_into(request.inputs, request.raw_input_contents, name, rows)
        response = await stub.ModelInfer(request, timeout=60)
        index = [o.name for o in response.outputs].index(output)
        shape = list(response.outputs[index].shape)
        raw = response.raw_output_contents[index]
        parts.append(np.frombuffer(raw, dtype=np.float32).reshape(shape))
    return np.concatenate(parts)


async def inference_count(channel: grpc.aio.Channel, model: str) -> int:
    """ModelStatistics' inference_count of the model's version 1."""
    stats = await pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
        pb.ModelStatisticsRequest(name=model, version="1"), timeout=30
    )
    return int(stats.model_stats[0].inference_count)
