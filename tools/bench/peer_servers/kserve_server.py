# mypy: ignore-errors
"""An ONNX model served by KServe's Python ModelServer: a `kserve.Model` wrapping an
ONNX Runtime session, answering the v2 gRPC protocol. Run with .bench/kserve/bin/python.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

V2_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}


class OnnxModel(Model):
    """predict() runs the session on the request's inputs."""

    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.session.run(None, feed)
        outputs = []
        for name, array in zip(self.output_names, results, strict=True):
            out = InferOutput(name=name, shape=list(array.shape), datatype=V2_TYPES[array.dtype])
            out.set_data_from_numpy(array, binary_data=True)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = OnnxModel(args.name, args.model_path, args.threads)
    ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_latency_logging=False,
    ).start([model])


if __name__ == "__main__":
    main()
