"""`maas export`: the command line over tools.export.export_module.

torch is imported only when the command runs, so `maas --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.cli import CliError
from tools.export import ExportError, export_module
from tools.parity import random_inputs

if TYPE_CHECKING:
    import torch


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `maas export` subcommand and its arguments."""
    p = subparsers.add_parser(
        "export",
        help="export a PyTorch module to ONNX and check it against torch",
        description="Export a PyTorch module to ONNX with a dynamic batch, check the model "
        "and compare its outputs with torch on ONNX Runtime.",
    )
    p.add_argument(
        "factory",
        nargs="?",
        metavar="MODULE:FACTORY",
        help="a callable that returns the torch.nn.Module, e.g. mypkg.models:build",
    )
    p.add_argument(
        "--torchscript",
        type=Path,
        metavar="FILE",
        help="a TorchScript file (torch.jit.save), instead of MODULE:FACTORY",
    )
    p.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="a state_dict (torch.save) to load into the factory's module",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        required=True,
        metavar="NAME=D0,D1,...",
        help="an example input's name and shape; once per input, in forward() order",
    )
    p.add_argument(
        "--input-dtype",
        action="append",
        default=[],
        metavar="[NAME=]DTYPE",
        help="e.g. int64 (every input) or ids=int64 (one input); default float32",
    )
    p.add_argument(
        "--output-names",
        metavar="A,B",
        help="comma-separated output names (default: output, or output_0, ...)",
    )
    p.add_argument(
        "--dynamic-axis",
        action="append",
        default=[],
        metavar="NAME:DIM:LABEL",
        help="one more dynamic axis, e.g. tokens:1:sequence",
    )
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="keep the example's batch size instead of a dynamic 'batch' axis",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--fp16", action="store_true", help="convert weights, inputs and outputs to FP16"
    )
    p.add_argument(
        "--class-labels",
        type=Path,
        metavar="FILE",
        help="class labels for the metadata: one per line, or a JSON list",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="parity: absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-3, help="parity: relative tolerance")
    p.add_argument(
        "--external-data",
        action="store_true",
        help="write the weights to OUT.onnx.data instead of into OUT.onnx",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx")
    p.add_argument("--register", metavar="NAME", help="upload the model to the registry as NAME")
    p.add_argument(
        "--registry", metavar="HOST:PORT", help="with --register (default $MAAS_REGISTRY)"
    )
    p.add_argument("--token", help="with --register: bearer token (default $MAAS_TOKEN)")
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="A",
        help="with --register: an alias to point at the uploaded version",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """`maas export`: returns the exit code; CliError for one-line failures."""
    upload = _uploader(args)
    module = _load_module(args)
    names, examples = _example_inputs(args.input_shape, args.input_dtype)
    output_names = args.output_names.split(",") if args.output_names else None
    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in args.dynamic_axis:
        name, _, rest = spec.partition(":")
        dim, _, label = rest.partition(":")
        if not (name and dim.isdigit() and label):
            raise CliError(f"--dynamic-axis expects NAME:DIM:LABEL, got '{spec}'")
        dynamic_axes.setdefault(name, {})[int(dim)] = label
    with progress_to_stderr():
        try:
            result = export_module(
                module,
                examples,
                args.output,
                input_names=names,
                output_names=output_names or _default_output_names(module, examples),
                dynamic_batch=not args.static_batch,
                dynamic_axes=dynamic_axes,
                opset=args.opset,
                fp16=args.fp16,
                class_labels=_read_labels(args.class_labels) if args.class_labels else None,
                external_data=args.external_data,
                atol=args.atol,
                rtol=args.rtol,
            )
        except ExportError as exc:
            raise CliError(str(exc)) from None
    print(
        f"wrote {result.path} (opset {result.opset}, inputs {', '.join(result.input_names)}; "
        f"outputs {', '.join(result.output_names)})"
    )
    if upload is not None:
        # upload_file(registry, token, name, path, ...) raises CliError itself.
        version = upload(args.registry, args.token, args.register, result.path, aliases=args.alias)
        print(f"registered {args.register} version {version.version}")
    return 0


def _uploader(args: argparse.Namespace) -> Any:
    """tools.models.upload_file when --register is given; fails before any export work."""
    if args.alias and not args.register:
        raise CliError("--alias needs --register")
    if not args.register:
        return None
    try:
        return importlib.import_module("tools.models").upload_file
    except (ImportError, AttributeError):
        raise CliError("registry upload is not available yet") from None


def _load_module(args: argparse.Namespace) -> torch.nn.Module:
    """The module named by MODULE:FACTORY (with --weights) or loaded from --torchscript."""
    import torch

    if (args.factory is None) == (args.torchscript is None):
        raise CliError("give exactly one of MODULE:FACTORY or --torchscript FILE")
    if args.torchscript is not None:
        if args.weights is not None:
            raise CliError("--weights applies to MODULE:FACTORY; a TorchScript file has its own")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; this loads it anyway
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(args.torchscript), map_location="cpu")
        except (OSError, RuntimeError) as exc:
            raise CliError(f"cannot load TorchScript {args.torchscript}: {exc}") from None
    module_name, _, attr = args.factory.partition(":")
    if not (module_name and attr):
        raise CliError(f"expected MODULE:FACTORY, got '{args.factory}'")
    try:
        factory: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as exc:
        raise CliError(f"cannot import {args.factory}: {exc}") from None
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise CliError(f"{args.factory}() returned {type(module).__name__}, not a torch.nn.Module")
    if args.weights is not None:
        try:
            module.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError) as exc:
            raise CliError(f"cannot load weights {args.weights}: {exc}") from None
    return module


def _example_inputs(
    shapes: Sequence[str], dtypes: Sequence[str]
) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Input names and seeded random example tensors from NAME=D0,D1 and [NAME=]DTYPE flags."""
    import torch

    default, per_input = "float32", {}
    for spec in dtypes:
        name, _, dtype_name = spec.rpartition("=")
        if name:
            per_input[name] = dtype_name
        else:
            default = dtype_name
    names, empties = [], []
    for spec in shapes:
        name, _, dims = spec.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")] if dims else []
        except ValueError:
            shape = [-1]
        if not name or any(d < 0 for d in shape):
            raise CliError(f"--input-shape expects NAME=D0,D1,..., got '{spec}'")
        dtype_name = per_input.pop(name, default)
        dtype: Any = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise CliError(f"unknown dtype '{dtype_name}' for input '{name}'")
        names.append(name)
        empties.append(torch.empty(shape, dtype=dtype))
    if per_input:
        raise CliError(f"--input-dtype for unknown inputs: {', '.join(per_input)}")
    return names, random_inputs(empties, batch_size=None, seed=1)


def _default_output_names(module: torch.nn.Module, examples: tuple[torch.Tensor, ...]) -> list[str]:
    """output, or output_0, output_1, ... when the module returns several tensors."""
    import torch

    try:
        with torch.inference_mode():
            outputs = module.eval()(*examples)
    except Exception as exc:  # the user's module: any error means the examples do not fit
        raise CliError(f"the module failed on the example inputs: {exc}") from None
    count = len(outputs) if isinstance(outputs, tuple | list) else 1
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _read_labels(path: Path) -> list[str]:
    """Class labels from a JSON list, or from a text file with one label per line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read class labels: {exc}") from None
    if path.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list):
            raise CliError(f"{path}: expected a JSON list of labels")
        return [str(label) for label in labels]
    return [line.strip() for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def progress_to_stderr() -> Iterator[None]:
    """Show the tools' progress lines on stderr, and hide torch's exporter chatter.

    torch logs "torchvision is not installed" on every export, and its own copy of any
    error that ExportError reports anyway.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    tools, torch_log = logging.getLogger("tools"), logging.getLogger("torch")
    levels = tools.level, torch_log.level
    tools.addHandler(handler)
    tools.setLevel(logging.INFO)
    torch_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        tools.removeHandler(handler)
        tools.setLevel(levels[0])
        torch_log.setLevel(levels[1])
