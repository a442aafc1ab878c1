"""An ExplainRequest message as plain Python: its head and tensors checked, not decoded.

The inputs take ModelInfer's path (services.inference.convert.infer_request and the
one tensor codec), so an explain request's tensors are read exactly as an inference
request's are; the background is read by the same codec, named `background`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from maas_proto.explain.v1 import explain_pb2
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import InvalidArgument
from services.common.names import echo
from services.common.tensors import Encoded, encoded
from services.inference import convert


@dataclass(frozen=True)
class ExplainRequest:
    """One explain request, its tensors checked against the data they carry."""

    model: str
    version: str
    id: str
    inputs: dict[str, Encoded]
    output: str
    target: int | None
    method: str
    # Background rows named like the inputs; None when the request has none.
    background: dict[str, Encoded] | None = None
    parameters: Mapping[str, object] = field(default_factory=dict)
    # Event-loop time after which no evaluation starts; None for no deadline.
    deadline: float | None = None
    key_id: str = ""
    # Answer with raw contents (binary_data_output unset or true), as ModelInfer does.
    raw: bool = True


def explain_request(
    msg: explain_pb2.ExplainRequest, deadline: float | None, key_id: str = ""
) -> ExplainRequest:
    """The request's fields, its inputs read as ModelInfer reads them."""
    head = pb.ModelInferRequest(
        model_name=msg.model_name,
        model_version=msg.model_version,
        id=msg.id,
        inputs=msg.inputs,
        raw_input_contents=msg.raw_input_contents,
    )
    infer = convert.infer_request(head, deadline, key_id)
    if msg.HasField("target") and msg.target < 0:
        raise InvalidArgument(f"target: {msg.target}, expected an element index >= 0")
    return ExplainRequest(
        model=infer.model,
        version=infer.version,
        id=msg.id,
        inputs=infer.inputs,
        output=msg.output,
        target=msg.target if msg.HasField("target") else None,
        method=msg.method,
        background=_background(msg.background, msg.raw_background_contents),
        parameters=convert.parameters(msg.parameters),
        deadline=deadline,
        key_id=key_id,
        raw=_wants_raw(msg.parameters),
    )


def _background(
    tensors: Sequence[pb.ModelInferRequest.InferInputTensor], raws: Sequence[bytes]
) -> dict[str, Encoded] | None:
    """The background tensors by name, each checked against the data it carries."""
    if not tensors:
        if raws:
            raise InvalidArgument(
                f"raw_background_contents has {len(raws)} entries but there is no background "
                "tensor, expected none"
            )
        return None
    if raws and len(raws) != len(tensors):
        raise InvalidArgument(
            f"raw_background_contents has {len(raws)} entries, expected {len(tensors)} "
            "(one per background tensor, in order)"
        )
    found: dict[str, Encoded] = {}
    for i, tensor in enumerate(tensors):
        where = f"background {echo(tensor.name)}"
        if tensor.name in found:
            raise InvalidArgument(f"{where} appears more than once")
        if raws and tensor.HasField("contents"):
            raise InvalidArgument(
                f"{where}: has typed contents but the request uses raw_background_contents; "
                "expected one or the other for all background tensors"
            )
        if not raws and not tensor.HasField("contents"):
            raise InvalidArgument(
                f"{where}: has no data, expected typed contents or raw_background_contents"
            )
        try:
            found[tensor.name] = encoded(tensor, raws[i] if raws else None)
        except InvalidArgument as exc:
            raise InvalidArgument(f"background: {exc.message}") from None
    return found


def _wants_raw(params: Mapping[str, pb.InferParameter]) -> bool:
    param = params.get(convert.BINARY_OUTPUT_PARAM)
    return param is None or param.WhichOneof("parameter_choice") != "bool_param" or param.bool_param
