"""What an uploaded model must pass: ONNX checker, opset range, external data, config.

Runs on files already on disk (the upload's staging directory), so models with
external data and models over 2 GiB are checked by path, never in memory.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from services.common.datatypes import by_onnx
from services.common.errors import InvalidArgument
from services.registry.domain import MAIN_FILE, Signature, TensorSpec

ONNX_DOMAINS = ("", "ai.onnx")
# The op domains ONNX Runtime's CPU, CUDA and TensorRT builds register (its
# include/onnxruntime/core/graph/constants.h, and ONNX's own training domains). A node
# in any other domain cannot load on inference, so it is refused at upload instead of
# failing there later. Provider-only domains (com.microsoft.dml, com.xilinx,
# com.intel.ai) are left out: maas runs none of those providers.
RUNTIME_DOMAINS = (
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview.training",
    "com.microsoft",
    "com.microsoft.experimental",
    "com.microsoft.nchwc",
    "com.ms.internal.nhwc",
    "org.pytorch.aten",
)
_MAX_MESSAGE = 600
_MAX_ECHO = 64


@dataclass(frozen=True)
class ModelFacts:
    """What validation learned about a model."""

    signature: Signature
    opset: int
    ir_version: int


def validate_model(
    directory: Path, sizes: Mapping[str, int], *, opset_min: int, opset_max: int
) -> ModelFacts:
    """Check `directory/model.onnx` and its external data; return its signature.

    `sizes` maps each uploaded file (relative path) to its size.
    """
    path = directory / MAIN_FILE
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise InvalidArgument(
            f"{MAIN_FILE} is not an ONNX model: expected a serialized ModelProto, "
            f"could not parse it ({_short(str(exc), directory)})"
        ) from None
    opset = _check_opset(model, opset_min, opset_max)
    _check_external_data(model, sizes)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises many types on odd input
        detail = _short(str(exc), directory)
        raise InvalidArgument(f"{MAIN_FILE} failed the ONNX checker: {detail}") from None
    facts = ModelFacts(signature(model), opset, int(model.ir_version))
    _check_op_domains(model)
    return facts


def _check_opset(model: onnx.ModelProto, opset_min: int, opset_max: int) -> int:
    versions = [imp.version for imp in model.opset_import if imp.domain in ONNX_DOMAINS]
    if not versions:
        raise InvalidArgument(
            f"{MAIN_FILE} imports no ai.onnx opset: expected one in {opset_min}..{opset_max}"
        )
    opset = int(max(versions))
    if not opset_min <= opset <= opset_max:
        raise InvalidArgument(
            f"{MAIN_FILE} uses opset {opset}, outside the allowed range: "
            f"expected {opset_min}..{opset_max}, got {opset}"
        )
    return opset


def _check_op_domains(model: onnx.ModelProto) -> None:
    """Every node's op is in a domain ONNX Runtime registers, or is a function the model
    defines itself (ONNX Runtime inlines those)."""
    local = {(fn.domain, fn.name) for fn in model.functions}
    for node in _all_nodes(model):
        domain, op = node.domain, node.op_type
        if domain in RUNTIME_DOMAINS or (domain, op) in local:
            continue
        raise InvalidArgument(
            f"node {_echo(node.name)} ({_echo(domain)}:{_echo(op)}) uses op domain "
            f"{_echo(domain)}, which ONNX Runtime does not register: expected one of "
            f"{list(RUNTIME_DOMAINS)}, or a function defined in the model"
        )


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """The nodes of the graph, of its subgraphs (If, Loop, Scan) and of local functions."""
    graphs = [model.graph]
    nodes = [node for fn in model.functions for node in fn.node]
    while graphs or nodes:
        if graphs:
            nodes.extend(graphs.pop().node)
            continue
        node = nodes.pop()
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)


def _echo(text: object) -> str:
    """A client string as it may be repeated: quoted, and cut when long."""
    text = str(text)
    return repr(text) if len(text) <= _MAX_ECHO else repr(text[:_MAX_ECHO]) + "..."


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """The external-data file locations a model's tensors name, as written."""
    found = []
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in found:
                    found.append(entry.value)
    return found


def _check_external_data(model: onnx.ModelProto, sizes: Mapping[str, int]) -> None:
    uploaded = sorted(p for p in sizes if p != MAIN_FILE)
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        # ONNX's strings are proto2, unchecked: protobuf hands invalid UTF-8 over as bytes.
        if not all(isinstance(text, str) for pair in info.items() for text in pair):
            raise InvalidArgument(
                f"tensor '{tensor.name!s}': external data entries must be UTF-8 text"
            )
        location = info.get("location", "")
        where = f"tensor '{tensor.name}': external data location {location!r}"
        if not location:
            raise InvalidArgument(f"tensor '{tensor.name}': external data has no location")
        normalized = posixpath.normpath(location.replace("\\", "/"))
        if (
            location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":")
            or normalized == ".."
            or normalized.startswith("../")
        ):
            raise InvalidArgument(
                f"{where} points outside the model directory: expected a relative path inside it"
            )
        if normalized not in sizes or normalized == MAIN_FILE:
            raise InvalidArgument(
                f"{where} names a file that was not uploaded: "
                f"expected one of {uploaded}, got {normalized!r}"
            )
        _check_extent(where, info, sizes[normalized])


def _check_extent(where: str, info: dict[str, str], size: int) -> None:
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise InvalidArgument(f"{where}: offset and length must be integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise InvalidArgument(
            f"{where}: bytes {offset}..{offset + length} are outside the file: "
            f"expected at most {size} bytes"
        )


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    graphs = [model.graph]
    nodes = [node for fn in model.functions for node in fn.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(graph.node)
            continue
        node = nodes.pop()
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)


def signature(model: onnx.ModelProto) -> Signature:
    """Inputs (initializers excluded) and outputs with v2 datatypes and shapes."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    return Signature(inputs, outputs)


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise InvalidArgument(
            f"tensor '{value.name}': type is {kind or 'missing'}, expected a tensor"
        )
    tensor_type = value.type.tensor_type
    known = onnx.TensorProto.DataType.DESCRIPTOR.values_by_number.get(tensor_type.elem_type)
    # The checker lets an element type outside the enum through; Name() would raise.
    elem = known.name.lower() if known else str(tensor_type.elem_type)
    datatype = by_onnx(f"tensor({elem})")
    if datatype is None:
        raise InvalidArgument(
            f"tensor '{value.name}': element type {elem} has no KServe v2 datatype: "
            "expected bool, (u)int8..64, float16, float, double or string"
        )
    if not tensor_type.HasField("shape"):
        return TensorSpec(value.name, datatype.name, (), unknown_rank=True)
    shape = tuple(
        int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim
    )
    return TensorSpec(value.name, datatype.name, shape)


def _short(text: str, directory: Path | None = None) -> str:
    # ONNX's messages name files by path: the staging directory never reaches a client.
    if directory is not None:
        text = text.replace(str(directory), "<upload>")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
