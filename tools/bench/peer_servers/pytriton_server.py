# mypy: ignore-errors
"""An ONNX model served by NVIDIA PyTriton (Triton with a Python model) on CPU.

Run with .bench/pytriton/bin/python, with LD_LIBRARY_PATH holding that Python's own
lib directory (Triton's Python backend stub links libpython). The model runs in ONNX
Runtime inside PyTriton's `@batch` function, behind Triton's dynamic batcher.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model_path, options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}

    @batch
    def infer(**tensors: np.ndarray) -> dict[str, np.ndarray]:
        results = session.run(None, {i.name: tensors[i.name] for i in inputs})
        return {o.name: r for o, r in zip(outputs, results, strict=True)}

    def spec(t: ort.NodeArg) -> Tensor:
        shape = tuple(d if isinstance(d, int) else -1 for d in t.shape[1:])
        return Tensor(name=t.name, dtype=dtypes[t.type], shape=shape)

    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
    )
    # PyTriton restricts the statistics endpoint to a generated token by default;
    # perf_analyzer and the benchmark read it, so open that one (and only that one).
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    )
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[spec(i) for i in inputs],
            outputs=[spec(o) for o in outputs],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher()),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
