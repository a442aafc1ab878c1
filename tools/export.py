"""PyTorch -> ONNX export with a dynamic batch, metadata, and a parity check on ONNX Runtime.

`export_module` is the library entry point; tools.export_cli adds `maas export` to the CLI.

What torch 2.13 can export (checked with `x * 2`, and `~x` for bool): float32, float16,
float64, int8, int16, int32, int64, uint8 and bool inputs and outputs round-trip through
ONNX Runtime on CPU. uint16, uint32 and uint64 export too, but torch implements few
eager ops for them (`x * 2` runs, `x + 1` does not), so the parity check fails for any
module that uses the missing ones. bfloat16 exports, but ONNX Runtime's CPU provider
lacks most bfloat16 kernels and numpy has no bfloat16: use check_parity=False.

Pitfalls this module handles, so that callers need not:
- `torch.onnx.export` uses the dynamo exporter (`torch.export`) by default. Without
  `dynamic_shapes` the batch is fixed; `torch.export.Dim` names must be identifiers.
- The dynamo exporter starts at opset 18. Lower opsets are converted with onnx's
  version converter (torch's own conversion can fail, and then leaves opset 18); where
  onnx lacks a down-adapter (Relu 14 -> 13), the TorchScript exporter is used instead.
- `external_data` defaults to True in torch; here onnx saves the model instead, as one
  file unless external_data is asked for. A stale `.data` file is never reused (onnx
  appends to an existing one), and the new one is made readable like the model.
- TorchScript modules cannot go through `torch.export`; they use the (deprecated)
  TorchScript exporter, whose `dynamic_axes` names the axes directly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools import parity
from tools.model_files import install_model, save_model
from tools.parity import ExportError, ParityReport, check_parity, random_inputs

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = [
    "ExportError",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_module",
]

_log = logging.getLogger(__name__)

METADATA_INPUT_NAMES = "maas.input_names"
METADATA_OUTPUT_NAMES = "maas.output_names"
METADATA_CLASS_LABELS = "maas.class_labels"
METADATA_EXPORTER = "maas.exporter"
BATCH_AXIS = "batch"
_DYNAMO_MIN_OPSET = 18
# FP16 keeps about three significant digits; the FP32 module is the reference.
_FP16_TOLERANCE = 1e-2


@dataclass(frozen=True)
class ExportResult:
    """An exported model: where it is, its interface, and the parity check's result."""

    path: Path
    opset: int
    input_names: list[str]
    output_names: list[str]
    parity: ParityReport | None


def export_module(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = 17,
    fp16: bool = False,
    class_labels: Sequence[str] | None = None,
    external_data: bool = False,
    check_parity: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    parity_inputs: tuple[torch.Tensor, ...] | None = None,
) -> ExportResult:
    """Export `module` to ONNX at `path`, check it, and compare it with torch on ONNX Runtime.

    dynamic_batch makes dim 0 of every input and output an axis named "batch";
    dynamic_axes adds more, as {input or output name: {dim: label}}. fp16 converts
    the floating-point weights, inputs and outputs to float16 (the parity tolerances
    then become at least 1e-2). The parity check runs on `parity_inputs`, or on seeded
    random inputs with a batch size other than the example's. The file appears at
    `path` only once every check has passed; ExportError says what failed.
    """
    path = Path(path)
    names_in, names_out = list(input_names), list(output_names)
    axes = _plan_axes(example_inputs, names_in, names_out, dynamic_batch, dynamic_axes)
    # torch.export makes one graph input of a tensor passed twice; give each its own.
    examples = tuple(
        x.clone() if any(x is y for y in example_inputs[:i]) else x
        for i, x in enumerate(example_inputs)
    )
    exported = module
    if fp16:
        exported = copy.deepcopy(module).half()
        examples = tuple(x.half() if x.is_floating_point() else x for x in examples)

    was_training = module.training
    module.eval()
    exported.eval()
    try:
        proto = _to_onnx(exported, _Graph(examples, names_in, names_out, axes, opset))
    finally:
        module.train(was_training)
    for kind, values, names in (
        ("inputs", proto.graph.input, names_in),
        ("outputs", proto.graph.output, names_out),
    ):
        if [v.name for v in values] != names:
            raise ExportError(
                f"the exported graph has {kind} {[v.name for v in values]}, expected {names}"
            )
    _name_axes(proto, axes, strict_batch=dynamic_batch)
    _write_metadata(proto, names_in, names_out, class_labels)

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / path.name
        save_model(proto, staged, external_data=external_data)
        _log.info("checking %s ...", path.name)
        import onnx

        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except Exception as exc:  # ValidationError, or InferenceError from shape inference
            raise ExportError(f"the exported model is not valid ONNX: {_root_cause(exc)}") from exc
        report = None
        if check_parity:
            inputs = parity_inputs or random_inputs(
                example_inputs, batch_size=_parity_batch(examples) if dynamic_batch else None
            )
            if fp16:
                inputs = tuple(x.half().to(x.dtype) if x.is_floating_point() else x for x in inputs)
                atol, rtol = max(atol, _FP16_TOLERANCE), max(rtol, _FP16_TOLERANCE)
            report = parity.check_parity(module, staged, inputs, atol, rtol)
            batch = f" at batch {inputs[0].shape[0]}" if inputs and inputs[0].dim() else ""
            _log.info(
                "parity%s: max abs %.2g, max rel %.2g",
                batch,
                report.max_abs_error,
                report.max_rel_error,
            )
        install_model(staged, path)
    return ExportResult(path, opset, names_in, names_out, report)


def _plan_axes(
    examples: Sequence[torch.Tensor],
    input_names: list[str],
    output_names: list[str],
    dynamic_batch: bool,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
) -> dict[str, dict[int, str]]:
    """{input or output name: {dim: label}} for every dynamic axis."""
    if len(input_names) != len(examples):
        raise ExportError(f"{len(examples)} example inputs but {len(input_names)} input names")
    every = input_names + output_names
    if len(set(every)) != len(every):
        raise ExportError(f"input and output names must be unique, got {every}")
    axes: dict[str, dict[int, str]] = {name: {} for name in every}
    if dynamic_batch:
        for name, example in zip(input_names, examples, strict=True):
            if example.dim() == 0:
                raise ExportError(f"input '{name}' is a scalar: it has no batch dimension")
        for name in every:
            axes[name][0] = BATCH_AXIS
    for name, dims in (dynamic_axes or {}).items():
        if name not in axes:
            raise ExportError(f"dynamic axis for unknown input or output '{name}'")
        axes[name].update(dims)
    for name, example in zip(input_names, examples, strict=True):
        for dim in axes[name]:
            if not 0 <= dim < example.dim():
                raise ExportError(f"input '{name}' has no dim {dim} (shape {list(example.shape)})")
    return {name: dims for name, dims in axes.items() if dims}


@dataclass(frozen=True)
class _Graph:
    """What the exporters need besides the module: examples, names, dynamic axes, opset."""

    examples: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    axes: dict[str, dict[int, str]]
    opset: int


def _to_onnx(module: torch.nn.Module, graph: _Graph) -> onnx.ModelProto:
    """The module as an ONNX model at graph.opset, before naming axes or adding metadata.

    The dynamo exporter comes first. Its opset-18 output is converted down when a lower
    opset is asked for; onnx cannot convert every op down (e.g. Relu 14 -> 13), and then
    the TorchScript exporter, which targets the opset directly, gets a try.
    """
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return _torchscript_export(module, graph)
    _log.info("exporting with torch %s (dynamo exporter) ...", torch.__version__)
    with _torch_errors():
        program = torch.onnx.export(
            module,
            graph.examples,
            dynamo=True,
            input_names=graph.input_names,
            output_names=graph.output_names,
            opset_version=max(graph.opset, _DYNAMO_MIN_OPSET),
            dynamic_shapes=_dynamic_shapes(graph) if graph.axes else None,
            external_data=False,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    try:
        return _convert_opset(program.model_proto, graph.opset)
    except ExportError as exc:
        _log.info("%s; trying the TorchScript exporter ...", exc)
        try:
            return _torchscript_export(module, graph)
        except ExportError as fallback:
            raise ExportError(f"{exc}; the TorchScript exporter failed too: {fallback}") from exc


def _torchscript_export(module: torch.nn.Module, graph: _Graph) -> onnx.ModelProto:
    """The (deprecated) TorchScript exporter: for ScriptModules and for old opsets."""
    import onnx
    import torch

    _log.info("exporting with torch %s (TorchScript exporter) ...", torch.__version__)
    with _torch_errors(), tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"  # this exporter fails without a file to write
        torch.onnx.export(
            module,
            graph.examples,
            str(target),
            dynamo=False,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes=graph.axes,
            opset_version=graph.opset,
        )
        return onnx.load(str(target))


@contextlib.contextmanager
def _torch_errors() -> Iterator[None]:
    """Turn torch's many exception types into ExportError, and hide its deprecation noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # A Dim shared by several inputs keeps one name; torch warns about the others.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", message="no signature found")  # TorchScript modules
        try:
            yield
        except Exception as exc:  # the innermost cause is what users need
            raise ExportError(f"torch could not export the module: {_root_cause(exc)}") from exc


def _dynamic_shapes(graph: _Graph) -> tuple[dict[int, Any], ...]:
    """torch.export's dynamic_shapes: one Dim per label, shared by every input that uses it."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes = []
    for name in graph.input_names:
        spec = {}
        for dim, label in graph.axes.get(name, {}).items():
            if label not in dims:
                dims[label] = Dim(_identifier(label))
            spec[dim] = dims[label]
        shapes.append(spec)
    return tuple(shapes)


def _identifier(label: str) -> str:
    """A torch.export.Dim name for an axis label (Dim names must be identifiers)."""
    if label.isidentifier():
        return label
    return "axis_" + re.sub(r"\W", "_", label)


def _name_axes(proto: onnx.ModelProto, axes: dict[str, dict[int, str]], strict_batch: bool) -> None:
    """Label the dynamic axes of the graph's inputs and outputs; fail where one is static."""
    renames: dict[str, str] = {}
    for value in [*proto.graph.input, *proto.graph.output]:
        shape = value.type.tensor_type.shape
        for dim, label in axes.get(value.name, {}).items():
            if dim >= len(shape.dim):
                raise ExportError(f"'{value.name}' has no dim {dim} in the exported graph")
            entry = shape.dim[dim]
            if entry.HasField("dim_value"):
                hint = "; export with dynamic_batch=False" if label == BATCH_AXIS else ""
                raise ExportError(
                    f"'{value.name}' dim {dim} is fixed at {entry.dim_value} in the exported "
                    f"graph, so it cannot be the dynamic axis '{label}'{hint}"
                )
            if strict_batch and dim == 0 and label == BATCH_AXIS and entry.dim_param != label:
                raise ExportError(
                    f"'{value.name}' dim 0 is '{entry.dim_param}', not the batch dimension; "
                    "export with dynamic_batch=False"
                )
            if entry.dim_param and entry.dim_param != label:
                renames[entry.dim_param] = label
            entry.dim_param = label
    for value in proto.graph.value_info:
        for entry in value.type.tensor_type.shape.dim:
            if entry.HasField("dim_param") and entry.dim_param in renames:
                entry.dim_param = renames[entry.dim_param]


def _convert_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model at the default-domain opset `opset`; ExportError if it cannot be converted."""
    import onnx.version_converter

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if current == opset:
        return proto
    _log.info("converting opset %s to %d ...", current, opset)
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
    except Exception as exc:  # the converter raises RuntimeError or ValueError
        raise ExportError(
            f"cannot convert the model from opset {current} to {opset}: {exc}"
        ) from exc
    return converted


def _write_metadata(
    proto: onnx.ModelProto,
    input_names: list[str],
    output_names: list[str],
    class_labels: Sequence[str] | None,
) -> None:
    """Record names, class labels and the exporter in the model's metadata_props."""
    import torch

    props = {
        METADATA_INPUT_NAMES: json.dumps(input_names),
        METADATA_OUTPUT_NAMES: json.dumps(output_names),
        METADATA_EXPORTER: f"torch {torch.__version__}",
    }
    if class_labels is not None:
        labels = [str(label) for label in class_labels]
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value != len(labels):
            raise ExportError(
                f"{len(labels)} class labels, but output '{output_names[0]}' "
                f"has {dims[-1].dim_value} classes"
            )
        props[METADATA_CLASS_LABELS] = json.dumps(labels)
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def _parity_batch(examples: Sequence[torch.Tensor]) -> int:
    """A batch size other than the examples', to show that the batch is dynamic."""
    sizes = {x.shape[0] for x in examples if x.dim()}
    return 3 if 3 not in sizes else 5


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's first line: torch wraps the real reason in layers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
