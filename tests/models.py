"""Small models for the tests, exported from PyTorch into a model repository.

The repository is built once per content hash under .data/test-models/ and
shared by the test processes (the interop suite runs in a process of its own).
BYTES has no PyTorch dtype, so that one model is built with onnx.helper.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".data" / "test-models"

# v2 datatype -> torch dtype, for the one-input models `dt_<type>`.
TORCH_DTYPES = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
NUMPY_DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class Twice(torch.nn.Module):
    """y = [x, x] along dim 1: Concat runs for every dtype in ONNX Runtime."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)


class Pair(torch.nn.Module):
    """Two inputs, two outputs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class PairV2(torch.nn.Module):
    """The same signature as Pair, with different outputs: a second version."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b + 100.0, a - b - 100.0


class SmallCnn(torch.nn.Module):
    """An 8x8 one-channel image classifier with random (seeded) weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x / 16.0))
        return torch.softmax(self.fc(h.flatten(1)), dim=1)


class Fixed(torch.nn.Module):
    """No batch dimension: a fixed [2, 3] input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3.0


class Slow(torch.nn.Module):
    """Enough matrix work per row to keep requests in flight for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*(torch.nn.Linear(1024, 1024) for _ in range(8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def export(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    names: list[str],
    outputs: list[str],
    path: Path,
    *,
    batch: bool = True,
) -> None:
    """torch.onnx.export (dynamo) into one file, with a dynamic batch when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: dim} for _ in names) if batch else None
    torch.onnx.export(
        module.eval(),
        inputs,
        str(path),
        input_names=names,
        output_names=outputs,
        dynamo=True,
        dynamic_shapes=dynamic,
        external_data=False,
        opset_version=18,
    )


def bytes_model(path: Path) -> None:
    """Identity over a string tensor [batch, n]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = oh.make_tensor_value_info
    graph = oh.make_graph(
        [oh.make_node("Identity", ["x"], ["y"])],
        "bytes_identity",
        [value("x", onnx.TensorProto.STRING, ["batch", "n"])],
        [value("y", onnx.TensorProto.STRING, ["batch", "n"])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


def fan_out_model(path: Path, width: int) -> None:
    """x [batch, 1] -> y [batch, width]: every row's value repeated `width` times, so a
    tiny request gets a large answer (the stream backpressure tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = oh.make_tensor("shape", onnx.TensorProto.INT64, [2], [1, width])
    graph = oh.make_graph(
        [oh.make_node("Expand", ["x", "shape"], ["y"])],
        "fan_out",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", width])],
        initializer=[shape],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build(root: Path) -> None:
    """Write every test model under root/<model>/1/model.onnx."""
    torch.manual_seed(0)
    for name, dtype in TORCH_DTYPES.items():
        x = torch.ones(2, 3, dtype=dtype)
        export(Twice(), (x,), ["x"], ["y"], root / f"dt_{name.lower()}" / "1" / "model.onnx")
    bytes_model(root / "dt_bytes" / "1" / "model.onnx")
    # Distinct tensors: torch.export treats one tensor passed twice as one input.
    for name, module in (("pair", Pair()), ("pair_v2", PairV2())):
        pair = (torch.ones(2, 4), torch.ones(2, 4))
        export(module, pair, ["a", "b"], ["sum", "diff"], root / name / "1" / "model.onnx")
    export(
        SmallCnn(),
        (torch.ones(2, 1, 8, 8),),
        ["input"],
        ["probabilities"],
        root / "cnn" / "1" / "model.onnx",
    )
    export(Slow(), (torch.ones(2, 1024),), ["x"], ["y"], root / "slow" / "1" / "model.onnx")
    export(
        Fixed(), (torch.ones(2, 3),), ["x"], ["y"], root / "fixed" / "1" / "model.onnx", batch=False
    )


def test_repository() -> Path:
    """The shared repository of test models, built once per version of this file."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    target = CACHE / f"{digest}-torch{torch.__version__}"
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.iterdir():
        if not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".build-"))
    build(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
