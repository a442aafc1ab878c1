"""`helm test`: ServerReady and one ModelInfer through the gateway.

The request is built from ModelMetadata (zeros of each input's shape, -1 dims as 1), so
the script needs no knowledge of the model. Retries while the model is still loading.
    MAAS_API_KEY=... python /scripts/smoke_test.py GATEWAY:PORT --model digits
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import grpc
import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tls_channel import add_tls_arguments, open_channel

log = logging.getLogger("smoke_test")


DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}

# Errors that no retry will fix.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
}


def infer_request(meta: pb.ModelMetadataResponse, model: str) -> pb.ModelInferRequest:
    """A request of zeros shaped like the model's inputs."""
    request = pb.ModelInferRequest(model_name=model)
    for tensor in meta.inputs:
        shape = [dim if dim > 0 else 1 for dim in tensor.shape]
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        zeros = np.zeros(shape, dtype=DTYPES[tensor.datatype])
        request.raw_input_contents.append(zeros.tobytes())
    return request


def check(stub: pb_grpc.GRPCInferenceServiceStub, model: str, headers: tuple) -> None:
    """One pass: ServerReady, ModelMetadata, ModelInfer; raises on any failure."""
    ready = stub.ServerReady(pb.ServerReadyRequest(), metadata=headers, timeout=10)
    if not ready.ready:
        raise RuntimeError("ServerReady: not ready")
    log.info("ServerReady: ready")
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), metadata=headers, timeout=10)
    reply = stub.ModelInfer(infer_request(meta, model), metadata=headers, timeout=30)
    if not reply.outputs:
        raise RuntimeError("ModelInfer: no outputs")
    shapes = {out.name: list(out.shape) for out in reply.outputs}
    log.info("ModelInfer %s (version %r): outputs %s", model, reply.model_version, shapes)


def main() -> int:
    """Exit 0 once a full pass succeeds, 1 on a fatal error or the timeout."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description="Smoke-test the maas gateway.")
    parser.add_argument("target", help="gateway host:port")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to retry in all")
    add_tls_arguments(parser)
    args = parser.parse_args()

    key = os.environ.get("MAAS_API_KEY", "")
    headers = (("authorization", f"Bearer {key}"),) if key else ()
    deadline = time.monotonic() + args.timeout
    with open_channel(args.target, args) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                check(stub, args.model, headers)
                return 0
            except grpc.RpcError as exc:
                if exc.code() in FATAL:
                    log.error("%s: %s", exc.code().name, exc.details())
                    return 1
                problem = f"{exc.code().name}: {exc.details()}"
            except RuntimeError as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                log.error("gave up after %.0fs: %s", args.timeout, problem)
                return 1
            log.info("%s; retrying", problem)
            time.sleep(3)


if __name__ == "__main__":
    sys.exit(main())
