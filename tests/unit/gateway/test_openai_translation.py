"""The OpenAI translation without servers: request checks, v2 requests and replies, SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import ResourceExhausted
from services.common.tensors import decode, encode
from services.gateway.http import openai_v2 as v2
from services.gateway.http.openai_catalog import kind_of
from services.gateway.http.openai_errors import BadField, describe
from services.gateway.http.openai_schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)
from services.gateway.http.openai_sse import DONE, _framed

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def inputs(serialized: bytes) -> dict[str, np.ndarray]:
    request = pb.ModelInferRequest.FromString(serialized)
    return {t.name: decode(t, request.raw_input_contents[i]) for i, t in enumerate(request.inputs)}


def test_harmless_fields_are_taken() -> None:
    request = parse(
        ChatRequest, body(CHAT | {"user": "u", "n": 1, "logprobs": False, "presence_penalty": 0})
    )
    assert request.sampling() == {}
    assert request.rendered() == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("kind", "data", "param", "words"),
    [
        (ChatRequest, CHAT | {"n": 3}, "n", "expected 1"),
        (ChatRequest, CHAT | {"logprobs": True}, "logprobs", "not supported"),
        (ChatRequest, CHAT | {"tools": [{"type": "function"}]}, "tools", "not supported"),
        (ChatRequest, CHAT | {"frequency_penalty": 0.5}, "frequency_penalty", "expected 0"),
        (ChatRequest, CHAT | {"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        (ChatRequest, CHAT | {"top_p": 0}, "top_p", "greater than 0"),
        (ChatRequest, {"model": "m", "messages": []}, "messages", "expected at least 1"),
        (ChatRequest, {"model": "m", "messages": [{"role": "user"}]}, "messages.0.content", ""),
        (CompletionRequest, {"model": "m", "prompt": ["a", "b"]}, "prompt", "one prompt"),
        (CompletionRequest, {"model": "m", "prompt": "a", "echo": True}, "echo", "expected false"),
        (EmbeddingRequest, {"model": "m", "input": []}, "input", "at least one string"),
        (EmbeddingRequest, {"model": "m", "input": "a", "encoding_format": "int8"}, None, ""),
    ],
)
def test_refusals_name_the_field(kind: Any, data: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadField) as caught:
        parse(kind, body(data))
    if param is not None:
        assert caught.value.param == param
    assert words in caught.value.message
    assert "got" in caught.value.message or "expected" in caught.value.message


def test_chat_becomes_messages_and_sampling_parameters() -> None:
    request = parse(
        ChatRequest,
        body(
            CHAT
            | {
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                ],
                "max_completion_tokens": 7,
                "temperature": 0,
                "seed": 3,
                "stop": "\n",
            }
        ),
    )
    declared = {"messages", "sampling_parameters", "exclude_input_in_output", *v2.FLAGS}
    got = inputs(
        v2.generate_request("m", declared, messages=request.rendered(), sampling=request.sampling())
    )
    assert "text_input" not in got and "stream" not in got
    assert orjson.loads(got["messages"][0]) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]
    assert orjson.loads(got["sampling_parameters"][0]) == {
        "max_tokens": 7,
        "temperature": 0,
        "seed": 3,
        "stop": ["\n"],
    }
    assert got["exclude_input_in_output"].tolist() == [True]
    assert all(got[f].tolist() == [True] for f in v2.FLAGS)


def test_only_declared_flags_are_sent() -> None:
    got = inputs(v2.generate_request("m", {"text_input"}, prompt="hello", stream=True))
    assert list(got) == ["text_input"] and got["text_input"].tolist() == [b"hello"]


def _response(outputs: dict[str, np.ndarray], final: bool | None = None) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="m")
    for name, array in outputs.items():
        raw = encode(array, response.outputs.add(name=name), raw=True)
        response.raw_output_contents.append(raw or b"")
    if final is not None:
        response.parameters[v2.FINAL].bool_param = final
    return response


def _texts(*items: str) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = [i.encode() for i in items]
    return array


def test_generated_reply_reads_usage_and_finish() -> None:
    response = _response(
        {
            "text_output": _texts("Hello!"),
            "num_input_tokens": np.array([5], np.uint32),
            "num_output_tokens": np.array([2], np.uint32),
            "finish_reason": _texts("length"),
        }
    )
    got = v2.generated_reply(response.SerializeToString())
    assert got == v2.Generated("Hello!", 5, 2, "length", True)
    part = v2.stream_part(
        pb.ModelStreamInferResponse(
            infer_response=_response({"text_output": _texts("He")}, final=False)
        ).SerializeToString()
    )
    assert part == v2.Generated("He", None, None, None, False)
    failed = pb.ModelStreamInferResponse(error_message="prompt too long")
    assert v2.stream_part(failed.SerializeToString()) == v2.StreamError("prompt too long")
    failed.infer_response.parameters[v2.ERROR_STATUS].string_param = "RESOURCE_EXHAUSTED"
    failure = v2.stream_part(failed.SerializeToString())
    assert failure == v2.StreamError("prompt too long", "RESOURCE_EXHAUSTED")


def test_embedding_request_and_reply() -> None:
    got = inputs(v2.embedding_request("m", ["a", "bc"]))
    assert got["text"].tolist() == [b"a", b"bc"]
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    out, tokens = v2.embeddings(_response({"embedding": vectors}).SerializeToString())
    assert np.array_equal(out, vectors) and tokens is None


def test_kinds_come_from_metadata() -> None:
    def meta(ins: list[str], outs: list[str]) -> pb.ModelMetadataResponse:
        m = pb.ModelMetadataResponse(name="m")
        for n in ins:
            m.inputs.add(name=n, datatype="BYTES", shape=[-1])
        for n in outs:
            m.outputs.add(name=n, datatype="BYTES", shape=[-1])
        return m

    assert kind_of(meta(["text_input", "stream"], ["text_output"])).kind == "generate"
    assert kind_of(meta(["messages"], ["text_output"])).kind == "generate"
    assert kind_of(meta(["text"], ["embedding"])).kind == "embedding"
    assert kind_of(meta(["a", "b"], ["sum"])).kind is None


async def _collect(chunks: AsyncIterator[dict[str, Any]]) -> list[bytes]:
    return [frame async for frame in _framed(chunks)]


async def test_sse_frames_end_in_done_or_an_error_event() -> None:
    async def good() -> AsyncIterator[dict[str, Any]]:
        yield {"a": 1}
        yield {"b": 2}

    async def bad() -> AsyncIterator[dict[str, Any]]:
        yield {"a": 1}
        raise ResourceExhausted("queue full")

    frames = await _collect(good())
    assert frames == [b'data: {"a":1}\n\n', b'data: {"b":2}\n\n', DONE]
    frames = await _collect(bad())
    assert frames[-1].startswith(b"data: ") and frames[-1] != DONE
    error = orjson.loads(frames[-1][6:])["error"]
    assert error["type"] == "rate_limit_error" and error["message"] == "queue full"


def test_unexpected_errors_are_fixed_500s() -> None:
    status, error, _ = describe(RuntimeError("/secret/path"))
    assert status == 500 and "/secret" not in error["error"]["message"]
