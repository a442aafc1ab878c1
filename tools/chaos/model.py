"""The model the harness serves: y = x + version, so every answer names its version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
from onnx import TensorProto, numpy_helper

MODEL = "chaos"
WIDTH = 4


def write_model(folder: Path, version: int) -> Path:
    """model.onnx for `version` under `folder`; its answers are the input plus `version`."""
    offset = numpy_helper.from_array(np.full((WIDTH,), float(version), np.float32), "offset")
    graph = oh.make_graph(
        [oh.make_node("Add", ["x", "offset"], ["y"])],
        f"{MODEL}_v{version}",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=[offset],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = folder / f"v{version}" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
