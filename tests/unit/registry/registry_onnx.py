"""Small ONNX models for the registry tests, built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8


def add_model(opset: int = 17, *, width: int = 4, bias: float = 0.0) -> onnx.ModelProto:
    """Y = X + B with X: [N, width] float, B an initializer."""
    b = numpy_helper.from_array(np.full(width, bias, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "B"], ["Y"])],
        "add",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", width])],
        [b],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


def model_bytes(opset: int = 17, **kwargs: float) -> bytes:
    """A serialized add_model."""
    return add_model(opset, **kwargs).SerializeToString()  # type: ignore[arg-type]


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a model as one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def save_external(
    directory: Path, *, name: str = "net.onnx", location: str = "net.onnx.data", width: int = 256
) -> Path:
    """An add_model whose initializer lives in an external-data file next to it."""
    directory.mkdir(parents=True, exist_ok=True)
    model = add_model(width=width, bias=1.5)
    path = directory / name
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def external_reference(location: str, *, length: int = 16) -> bytes:
    """A model whose initializer claims external data at `location` (nothing is written)."""
    model = add_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()
