"""`maas explain MODEL`: why the model gave its answer for one input, as a picture.

The input is read as `maas infer` reads it (the model's metadata decides):
  - an image for a tensor model such as digits: grey, resized to the input's
    height and width, and scaled to 0..16 with dark ink high, as scikit-learn's
    digits are (or a `.npy` file, sent as is);
  - `--text` for a text model (BYTES input), explained token by token (method
    `tokens`; an embedding model also needs `--reference`).

It calls maas.explain.v1.Explainer/Explain (the gateway serves it, and so does an
inference server), prints the explained class, the output at the input and at the
baseline and the method's error estimate, and with `--png` writes the attribution
map over the input: a diverging colour map centred at 0 (red raised the output,
blue lowered it), with a colour bar.

    maas explain digits --input digit.png --png explain.png
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from tools.cli import CliError
from tools.infer import add_connection_arguments, add_input, auth_metadata, gateway_channel

# The heatmap's size in pixels is FIGSIZE * DPI (no tight bounding box: a fixed size).
FIGSIZE = (6.0, 3.0)
DPI = 100
DEFAULT_METHOD = "occlusion"
METHODS = ("occlusion", "kernel_shap", "tokens")


@dataclass(frozen=True)
class Explained:
    """What Explain answered, decoded."""

    model: str
    version: str
    method: str
    output: str
    target: int
    base_value: float
    output_value: float
    error_estimate: float
    evaluations: int
    # The input as sent (its batch dimension dropped) and its attributions, same shape.
    input: np.ndarray
    attributions: np.ndarray
    tokens: list[str] | None = None
    # An embedding model's reference text: the value explained is the similarity to it.
    reference: str | None = None


def explain_request(args: argparse.Namespace, name: str, array: np.ndarray, method: str) -> Any:
    """The ExplainRequest for one input tensor and the command's flags."""
    from maas_proto.explain.v1 import explain_pb2

    request = explain_pb2.ExplainRequest(
        model_name=args.model, model_version=args.version, method=method, output=args.output
    )
    if args.target is not None:
        request.target = args.target
    add_input(request, name, array)
    if args.max_evaluations is not None:
        request.parameters["max_evaluations"].int64_param = args.max_evaluations
    if args.patch_size is not None:
        request.parameters["patch_size"].int64_param = args.patch_size
    if args.seed is not None:
        request.parameters["seed"].int64_param = args.seed
    if args.reference is not None:
        request.parameters["reference_text"].string_param = args.reference
    return request


async def explain(args: argparse.Namespace) -> Explained:
    """ModelMetadata, then one Explain call, decoded."""
    from maas_proto.explain.v1 import explain_pb2_grpc
    from maas_proto.inference import grpc_predict_v2_pb2 as pb
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.errors import error_from_rpc

    metadata = auth_metadata(args.key)
    async with gateway_channel(args) as channel:
        try:
            meta = await pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version),
                metadata=metadata,
                timeout=args.timeout,
            )
            if len(meta.inputs) != 1:
                raise CliError(
                    f"model '{args.model}' has {len(meta.inputs)} inputs; maas explain sends one"
                )
            spec = meta.inputs[0]
            array, method = _input_array(args, spec.name, spec.datatype, list(spec.shape))
            request = explain_request(args, spec.name, array, method)
            reply = await explain_pb2_grpc.ExplainerStub(channel).Explain(
                request, metadata=metadata, timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            raise CliError(f"{error.status}: {error.message}") from None
    return _decoded(reply, spec.name, array, args.reference)


def _input_array(
    args: argparse.Namespace, name: str, datatype: str, shape: list[int]
) -> tuple[np.ndarray, str]:
    """The one-row input batch and the method to ask for."""
    from services.common.datatypes import by_name
    from tools.infer import load_input

    if datatype == "BYTES":
        if not args.text:
            raise CliError(f"model '{args.model}' takes text: give --text")
        return np.array([args.text.encode()], dtype=object), args.method or "tokens"
    if args.input is None:
        raise CliError(f"model '{args.model}' takes a tensor '{name}': give --input FILE")
    array = load_input(Path(args.input), shape, by_name(datatype, tensor=name).numpy)
    if array.shape[0] != 1:
        raise CliError(f"{args.input}: {array.shape[0]} rows; maas explain explains one")
    return array, args.method or DEFAULT_METHOD


def _decoded(reply: Any, name: str, array: np.ndarray, reference: str | None) -> Explained:
    from services.common.tensors import decode

    raw = list(reply.raw_attribution_contents)
    tensors = {
        out.name: decode(out, raw[i] if raw else None) for i, out in enumerate(reply.attributions)
    }
    if name not in tensors:
        raise CliError(f"the answer has no attributions for input '{name}'")
    words = tensors.get(f"{name}.tokens")
    tokens = None
    if words is not None:
        tokens = [w.decode() if isinstance(w, bytes) else str(w) for w in words.ravel()]
    return Explained(
        model=reply.model_name,
        version=reply.model_version,
        method=reply.method,
        output=reply.output,
        target=int(reply.target),
        base_value=float(reply.base_value),
        output_value=float(reply.output_value),
        error_estimate=float(reply.error_estimate),
        evaluations=int(reply.evaluations),
        input=array[0],
        attributions=np.asarray(tensors[name], dtype=np.float64).reshape(
            -1 if tokens is not None else array.shape[1:]
        ),
        tokens=tokens,
        reference=reference if tokens is not None else None,
    )


def summary(result: Explained) -> str:
    """The printable lines: the class explained and the figures that check it."""
    lines = [
        f"model {result.model} version {result.version}, method {result.method}",
        f"output {result.output}, {_explained(result)}",
        f"output_value {result.output_value:.6f}",
        f"base_value {result.base_value:.6f}",
        f"error_estimate {result.error_estimate:.6g}",
        f"evaluations {result.evaluations}",
    ]
    if result.tokens is not None:
        lines += [
            f"  {a:+.4f}  {t}" for t, a in zip(result.tokens, result.attributions, strict=False)
        ]
    return "\n".join(lines)


def _explained(result: Explained) -> str:
    """What the value explained is: a class (an output element) or a similarity."""
    if result.reference is not None:
        return f"similarity to {result.reference!r}"
    return f"class {result.target}"


def heatmap(result: Explained, path: Path) -> None:
    """Write the input and its attribution map (the input's ink outlined over it) as
    a PNG of FIGSIZE * DPI pixels."""
    try:
        import matplotlib
    except ImportError:
        raise CliError(
            "--png needs matplotlib (the 'bench' extra: pip install 'maas[bench]')"
        ) from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    value = f"{result.output_value:.3f}"
    shown = f"{result.output} {value}" if result.reference is None else value
    title = f"{result.model}: {_explained(result)}, {shown} ({result.method})"
    if result.tokens is not None:
        figure, axes = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        try:
            _token_bars(axes, result)
            figure.suptitle(title, fontsize=10)
            figure.savefig(path, dpi=DPI)
        finally:
            plt.close(figure)
        return
    picture = _plane(result.input)
    values = _plane(result.attributions)
    span = float(np.abs(values).max()) or 1.0
    figure, (left, right) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI, layout="constrained")
    try:
        left.imshow(picture, cmap="gray_r", interpolation="nearest")
        left.set_title("input", fontsize=9)
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)
        shown = right.imshow(values, cmap="RdBu_r", norm=norm, interpolation="nearest")
        if picture.max() > picture.min():
            middle = (float(picture.max()) + float(picture.min())) / 2
            right.contour(picture, levels=[middle], colors="black", linewidths=0.8)
        right.set_title("attribution", fontsize=9)
        figure.colorbar(shown, ax=right, shrink=0.8)
        for axes in (left, right):
            axes.set_xticks([])
            axes.set_yticks([])
        figure.suptitle(title, fontsize=10)
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)


def _plane(array: np.ndarray) -> np.ndarray:
    """A 2-D picture of an input-shaped array: its last two dimensions, channels
    (a trailing 3, or leading ones) summed."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 3 and values.shape[-1] == 3:
        return values.sum(axis=-1)
    if values.ndim < 2:
        return values.reshape(1, -1)
    return values.reshape(-1, *values.shape[-2:]).sum(axis=0)


def _token_bars(axes: Any, result: Explained) -> None:
    from matplotlib import colormaps

    values = result.attributions
    span = float(np.abs(values).max()) or 1.0
    colours = colormaps["RdBu_r"]((values / span + 1) / 2)
    positions = np.arange(len(values))
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, labels=result.tokens or [])
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", linewidth=0.5)
    axes.set_xlabel("attribution")


def run(args: argparse.Namespace) -> int:
    """`maas explain`."""
    result = asyncio.run(explain(args))
    print(summary(result))
    if args.png is not None:
        heatmap(result, Path(args.png))
        print(f"wrote {args.png}")
    return 0


def register(subparsers: Any) -> None:
    """Add `maas explain`."""
    parser = subparsers.add_parser(
        "explain",
        help="explain one prediction: attributions and a heatmap PNG",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model")
    parser.add_argument("--input", help="an image or .npy file (a tensor model)")
    parser.add_argument("--text", help="the text to explain (a text model)")
    parser.add_argument("--reference", help="an embedding model: explain similarity to this text")
    parser.add_argument("--png", help="write the attribution heatmap here")
    parser.add_argument(
        "--method", choices=METHODS, help=f"default: {DEFAULT_METHOD} (tokens for text)"
    )
    parser.add_argument("--output", default="", help="the output to explain (default: the one)")
    parser.add_argument("--target", type=int, help="class or element (default: the largest)")
    parser.add_argument("--max-evaluations", type=int, help="model evaluations at most")
    parser.add_argument("--patch-size", type=int, help="occlusion: the square patch's side")
    parser.add_argument("--seed", type=int, help="kernel_shap: the sampling seed")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)
