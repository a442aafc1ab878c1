"""`maas infer MODEL --input FILE`: send a tensor or an image through the gateway.

Inputs: a `.npy` file (sent as is) or an image (PNG, JPEG, ...) that is turned
into the model's input shape: grey, resized, and scaled to 0..16 with dark ink
high, as scikit-learn's digits are. For a model with one output of class
probabilities, the predicted class and its probability are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from tools.cli import CliError


def load_input(path: Path, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """The file as a batch for an input of `shape` (-1 dims taken from the file)."""
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix == ".npy":
        array = np.load(path)
        if len(array.shape) == len(shape) - 1:
            array = array[None]
        return np.ascontiguousarray(array, dtype=dtype)
    try:
        from PIL import Image
    except ImportError:
        raise CliError("reading images needs Pillow: pip install pillow") from None
    height, width = (d if d > 0 else 8 for d in shape[-2:])
    grey = Image.open(path).convert("L").resize((width, height))
    pixels = (255.0 - np.asarray(grey, dtype=np.float32)) / 255.0 * 16.0
    return pixels.reshape([1] * (len(shape) - 2) + [height, width]).astype(dtype)


async def infer(args: argparse.Namespace) -> str:
    """One ModelInfer call; the printable result."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.errors import ServiceError, error_from_rpc
    from services.common.tensors import decode, encode

    key = args.key or os.environ.get("MAAS_API_KEY")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with grpc.aio.insecure_channel(args.gateway) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = await stub.ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version),
                metadata=metadata,
                timeout=args.timeout,
            )
            if len(meta.inputs) != 1:
                raise CliError(
                    f"model '{args.model}' has {len(meta.inputs)} inputs; maas infer sends one"
                )
            spec = meta.inputs[0]
            from services.common.datatypes import by_name

            array = load_input(
                Path(args.input), list(spec.shape), by_name(spec.datatype, tensor=spec.name).numpy
            )
            request = pb.ModelInferRequest(model_name=args.model, model_version=args.version)
            tensor = request.inputs.add(name=spec.name)
            raw = encode(array, tensor, raw=True)
            assert raw is not None
            request.raw_input_contents.append(raw)
            reply = await stub.ModelInfer(request, metadata=metadata, timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            error: ServiceError = error_from_rpc(exc)
            raise CliError(f"{error.status}: {error.message}") from None
    lines = [f"model {reply.model_name} version {reply.model_version}"]
    for i, out in enumerate(reply.outputs):
        values = decode(out, reply.raw_output_contents[i] if reply.raw_output_contents else None)
        lines.append(describe(out.name, values))
    return "\n".join(lines)


def describe(name: str, values: np.ndarray) -> str:
    """Predicted class and probability for probability rows, else the values."""
    rows = values.reshape(values.shape[0], -1) if values.ndim > 1 else None
    if (
        rows is not None
        and values.dtype.kind == "f"
        and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
    ):
        picks = [f"class {int(r.argmax())} (p={float(r.max()):.3f})" for r in rows]
        return f"{name}: " + ", ".join(picks)
    return f"{name}: {np.array2string(values, threshold=20)}"


def run(args: argparse.Namespace) -> int:
    """`maas infer`."""
    print(asyncio.run(infer(args)))
    return 0


def register(subparsers: Any) -> None:
    """Add `maas infer`."""
    parser = subparsers.add_parser(
        "infer", help="send a tensor or image through the gateway", description=__doc__
    )
    parser.add_argument("model")
    parser.add_argument("--input", required=True, help=".npy tensor or an image file")
    parser.add_argument("--version", default="", help="number or alias (default: production)")
    parser.add_argument("--gateway", default="localhost:8001", help="gateway host:port")
    parser.add_argument("--key", help="API key (default $MAAS_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.set_defaults(func=run)
