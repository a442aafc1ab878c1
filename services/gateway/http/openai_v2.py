"""OpenAI requests as v2 ModelInferRequests for the text models, and their replies back.

The text models' v2 I/O (issue D) is that of Triton's vLLM backend: an embedding
model takes BYTES `text` [n] and answers FP32 `embedding` [n, d]; a generative
model takes `text_input` or `messages` (JSON, rendered with the model's chat
template), `sampling_parameters` (JSON) and BOOL flags, and answers `text_output`
with the optional `num_input_tokens`, `num_output_tokens` and `finish_reason`.
Optional inputs are sent only when the model's metadata declares them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import Internal, ServiceError
from services.common.tensors import decode, encode

TEXT, EMBEDDING = "text", "embedding"
TEXT_INPUT, MESSAGES, SAMPLING = "text_input", "messages", "sampling_parameters"
TEXT_OUTPUT = "text_output"
STREAM, EXCLUDE_INPUT = "stream", "exclude_input_in_output"
NUM_INPUT, NUM_OUTPUT, FINISH = "num_input_tokens", "num_output_tokens", "finish_reason"
FLAGS = ("return_num_input_tokens", "return_num_output_tokens", "return_finish_reason")
FINAL = "triton_final_response"
# The gRPC status name of a streamed request's failure, beside its error_message
# (services.gateway.relay), so an HTTP answer can keep the status.
ERROR_STATUS = "maas_error_status"


def _add(request: pb.ModelInferRequest, name: str, array: np.ndarray) -> None:
    tensor = request.inputs.add(name=name)
    raw = encode(array, tensor, raw=True)
    request.raw_input_contents.append(raw or b"")


def _bytes(*items: str | bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = [i.encode() if isinstance(i, str) else i for i in items]
    return array


def embedding_request(model: str, texts: list[str]) -> bytes:
    """An embedding model's request for `texts`."""
    request = pb.ModelInferRequest(model_name=model)
    _add(request, TEXT, _bytes(*texts))
    return request.SerializeToString()


def generate_request(
    model: str,
    declared: Collection[str],
    *,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    sampling: dict[str, Any] | None = None,
    stream: bool = False,
) -> bytes:
    """A generative model's request for a prompt or chat messages; `declared` are the
    model's input names, so optional flags go only to models that take them."""
    request = pb.ModelInferRequest(model_name=model)
    if messages is not None:
        _add(request, MESSAGES, _bytes(orjson.dumps(messages)))
    else:
        _add(request, TEXT_INPUT, _bytes(prompt or ""))
    if SAMPLING in declared:
        _add(request, SAMPLING, _bytes(orjson.dumps(sampling or {})))
    flags = {EXCLUDE_INPUT: True, STREAM: stream} | dict.fromkeys(FLAGS, True)
    for name, value in flags.items():
        if name in declared:
            _add(request, name, np.array([value], dtype=np.bool_))
    return request.SerializeToString()


def _reply(data: bytes) -> pb.ModelInferResponse:
    try:
        return pb.ModelInferResponse.FromString(data)
    except DecodeError:
        raise Internal("internal error") from None


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """A reply's outputs by name, decoded (raw contents or typed)."""
    raws = response.raw_output_contents
    out: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        out[tensor.name] = decode(tensor, raws[index] if index < len(raws) else None)
    return out


def _bad_reply(what: str) -> ServiceError:
    return Internal(f"the model's reply has no usable {what}")


def embeddings(data: bytes) -> tuple[np.ndarray, int | None]:
    """The FP32 [n, d] embeddings of an embedding reply, and its input token count when
    the model reports one."""
    got = outputs(_reply(data))
    vectors = got.get(EMBEDDING)
    if vectors is None or vectors.ndim != 2:
        raise _bad_reply("'embedding' output")
    return vectors.astype(np.float32, copy=False), _count(got.get(NUM_INPUT))


@dataclass(frozen=True)
class Generated:
    """A generative reply (or one streamed part): its text and the usage it reports."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    final: bool = True


def _count(array: np.ndarray | None) -> int | None:
    if array is None or array.size == 0:
        return None
    return int(np.asarray(array, dtype=np.int64).sum())


def _text(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    return "".join(
        v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel()
    )


def generated(response: pb.ModelInferResponse) -> Generated:
    """A generative model's reply (unary or one streamed response)."""
    got = outputs(response)
    finish = _text(got.get(FINISH)) or None
    final = response.parameters.get(FINAL)
    return Generated(
        _text(got.get(TEXT_OUTPUT)),
        _count(got.get(NUM_INPUT)),
        _count(got.get(NUM_OUTPUT)),
        finish,
        True if final is None else final.bool_param,
    )


def generated_reply(data: bytes) -> Generated:
    """A unary ModelInfer reply of a generative model."""
    return generated(_reply(data))


@dataclass(frozen=True)
class StreamError:
    """A streamed request's failure: its message and status name ("" when not given)."""

    message: str
    status: str = ""


def stream_response(data: bytes) -> pb.ModelInferResponse | StreamError:
    """One ModelStreamInferResponse: its response, or its failure."""
    try:
        message = pb.ModelStreamInferResponse.FromString(data)
    except DecodeError:
        raise Internal("internal error") from None
    if message.error_message:
        status = message.infer_response.parameters.get(ERROR_STATUS)
        return StreamError(message.error_message, status.string_param if status else "")
    return message.infer_response


def stream_part(data: bytes) -> Generated | StreamError:
    """One ModelStreamInferResponse: what it generated, or its failure."""
    response = stream_response(data)
    return response if isinstance(response, StreamError) else generated(response)
