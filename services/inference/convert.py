"""Conversion between v2 protobuf messages and the inference app's dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import model_config_pb2 as mc

from services.common.errors import InvalidArgument
from services.common.names import echo
from services.common.streams import ERROR_STATUS_PARAM, FINAL_PARAM
from services.common.tensors import Raw, encode, encoded
from services.common.versions import selector
from services.inference.app import InferRequest, InferResult, ModelDetails, ModelMetadata
from services.inference.manager import IndexEntry
from services.inference.runtime import CPU, TensorSpec
from services.inference.stats import StatsSnapshot, Totals
from services.inference.validate import OFF_LOOP_ELEMENTS

# Request parameter, as in Triton's HTTP protocol: false asks for typed contents.
BINARY_OUTPUT_PARAM = "binary_data_output"
# Request parameter, as in Triton: the final flag comes on an extra empty response.
EMPTY_FINAL_PARAM = "triton_enable_empty_final_response"


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, object]:
    """v2 parameters as Python values (bool, int, str or float)."""
    values: dict[str, object] = {}
    for name, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            values[name] = getattr(param, choice)
    return values


def infer_request(
    msg: pb.ModelInferRequest,
    deadline: float | None,
    key_id: str = "",
    raws: Sequence[Raw] | None = None,
) -> InferRequest:
    """A ModelInferRequest's fields and tensors, each tensor checked against the data it
    carries (decoded later, once it fits the model); InvalidArgument naming the first bad one.

    `raws`: the raw contents where they were kept out of the message
    (services.inference.received); the message's own otherwise."""
    version = selector(msg.model_version, what="model_version")
    if raws is None:
        raws = msg.raw_input_contents
    if raws and len(raws) != len(msg.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raws)} entries, expected {len(msg.inputs)} "
            "(one per input, in order)"
        )
    inputs = {}
    for i, tensor in enumerate(msg.inputs):
        if tensor.name in inputs:
            raise InvalidArgument(f"input {echo(tensor.name)} appears more than once")
        if raws and tensor.HasField("contents"):
            raise InvalidArgument(
                f"input {echo(tensor.name)}: has typed contents but the request uses "
                "raw_input_contents; expected one or the other for all inputs"
            )
        if not raws and not tensor.HasField("contents"):
            raise InvalidArgument(
                f"input {echo(tensor.name)}: has no data, expected typed contents or "
                "raw_input_contents"
            )
        inputs[tensor.name] = encoded(tensor, raws[i] if raws else None)
    outputs = tuple(o.name for o in msg.outputs)
    return InferRequest(
        msg.model_name,
        version,
        msg.id,
        inputs,
        outputs,
        deadline,
        parameters(msg.parameters),
        key_id,
    )


def wants_raw(msg: pb.ModelInferRequest) -> bool:
    """Raw output contents unless the request sets binary_data_output to false."""
    param = msg.parameters.get(BINARY_OUTPUT_PARAM)
    return param is None or param.WhichOneof("parameter_choice") != "bool_param" or param.bool_param


def wants_empty_final(msg: pb.ModelInferRequest) -> bool:
    """Whether the request asks for its final flag on an extra empty response."""
    param = msg.parameters.get(EMPTY_FINAL_PARAM)
    return (
        param is not None
        and param.WhichOneof("parameter_choice") == "bool_param"
        and (param.bool_param)
    )


def stream_response(response: pb.ModelInferResponse, *, final: bool) -> pb.ModelStreamInferResponse:
    """One stream response, flagged as Triton flags it."""
    response.parameters[FINAL_PARAM].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=response)


def stream_error(
    echo: pb.ModelInferResponse, message: str, status: str
) -> pb.ModelStreamInferResponse:
    """A request's failure on a stream: its last response."""
    echo.parameters[FINAL_PARAM].bool_param = True
    echo.parameters[ERROR_STATUS_PARAM].string_param = status
    return pb.ModelStreamInferResponse(error_message=message, infer_response=echo)


def encode_costly(result: InferResult, *, raw: bool) -> bool:
    """Whether encoding `result` takes a Python step per element for long enough to
    keep it off the event loop: BYTES outputs always do, typed contents too."""
    steps = sum(a.size for a in result.outputs.values() if not raw or a.dtype.kind in "OUS")
    return steps > OFF_LOOP_ELEMENTS


def infer_response(result: InferResult, *, raw: bool) -> pb.ModelInferResponse:
    """Encode outputs: raw_output_contents for all outputs, or typed contents for all."""
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=result.id
    )
    for name, array in result.outputs.items():
        tensor = response.outputs.add(name=name)
        data = encode(array, tensor, raw=raw)
        if data is not None:
            raw = True  # a type without typed contents (FP16) makes the whole response raw
            response.raw_output_contents.append(data)
    if len(response.raw_output_contents) not in (0, len(response.outputs)):
        return infer_response(result, raw=True)
    return response


def _tensor_meta(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype.name, shape=list(spec.shape)
    )


def metadata_response(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    """ModelMetadataResponse from the app's metadata."""
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=list(meta.versions),
        platform=meta.platform,
        inputs=[_tensor_meta(s) for s in meta.inputs],
        outputs=[_tensor_meta(s) for s in meta.outputs],
    )


def config_response(model: ModelDetails) -> pb.ModelConfigResponse:
    """Triton's model_config shape, so perf_analyzer and tritonclient accept it."""
    batch = model.max_batch_size
    skip = 1 if batch > 0 else 0
    config = mc.ModelConfig(
        name=model.name,
        platform=model.platform,
        backend="onnxruntime",
        max_batch_size=batch,
        default_model_filename=model.filename,
    )
    for spec in model.inputs:
        config.input.add(
            name=spec.name,
            data_type=mc.DataType.Value(spec.datatype.triton),
            dims=spec.shape[skip:],
            optional=spec.optional,
        )
    for spec in model.outputs:
        config.output.add(
            name=spec.name,
            data_type=mc.DataType.Value(spec.datatype.triton),
            dims=spec.shape[skip:],
        )
    kind = (
        mc.ModelInstanceGroup.KIND_CPU if model.provider == CPU else mc.ModelInstanceGroup.KIND_GPU
    )
    config.instance_group.add(name=model.name, kind=kind, count=model.instances)
    batching = model.batching
    if batch > 0 and batching.enabled:
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
        config.dynamic_batching.default_queue_policy.max_queue_size = batching.max_queue_size
    config.parameters["execution_provider"].string_value = model.provider
    if model.decoupled:
        config.model_transaction_policy.decoupled = True
    return pb.ModelConfigResponse(config=config)


def _duration(d: Totals) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_response(snapshots: list[StatsSnapshot]) -> pb.ModelStatisticsResponse:
    """ModelStatisticsResponse in Triton's shape."""
    response = pb.ModelStatisticsResponse()
    for s in snapshots:
        entry = response.model_stats.add(
            name=s.name,
            version=s.version,
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
        )
        stats = entry.inference_stats
        for field in (
            "success",
            "fail",
            "queue",
            "compute_input",
            "compute_infer",
            "compute_output",
        ):
            getattr(stats, field).CopyFrom(_duration(getattr(s, field)))
        for batch in s.batches:
            entry.batch_stats.add(
                batch_size=batch.batch_size,
                compute_input=_duration(batch.compute_input),
                compute_infer=_duration(batch.compute_infer),
                compute_output=_duration(batch.compute_output),
            )
    return response


def index_response(rows: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    """RepositoryIndexResponse from the manager's index."""
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=r.name, version=r.version, state=r.state, reason=r.reason
            )
            for r in rows
        ]
    )
