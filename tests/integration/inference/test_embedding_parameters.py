"""What an embedding request says beyond its texts, through a real inference server
over gRPC: the `truncate` parameter (default true; false makes a text longer than
max_length INVALID_ARGUMENT naming it), ModelStreamInfer, where each request gets
its one final response, the outputs it asks for (num_input_tokens beside the vectors
unless it names only some), and the API key id (x-maas-key-id, as the gateway passes
it) under which the model counts the tokens it embedded."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer

from services.common.caller import KEY_ID_HEADER
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.embedding_models import minilm_dir
from tools.demo import minilm

SHORT = "I love eating pizza with extra cheese."
# Longer than max_length (256) in tokens.
LONG = " ".join(f"word{i} and more" for i in range(150))


def request(texts: Sequence[str], **parameters: object) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=minilm.NAME)
    tensor = msg.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    for name, value in parameters.items():
        if isinstance(value, bool):
            msg.parameters[name].bool_param = value
        else:
            msg.parameters[name].string_param = str(value)
    return msg


def vectors(reply: pb.ModelInferResponse) -> np.ndarray:
    output = reply.outputs[0]
    assert (output.name, output.datatype) == ("embedding", "FP32")
    return np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(output.shape)


def token_counts(reply: pb.ModelInferResponse) -> list[int]:
    index = [o.name for o in reply.outputs].index("num_input_tokens")
    assert reply.outputs[index].datatype == "UINT32"
    return np.frombuffer(reply.raw_output_contents[index], np.uint32).tolist()


@pytest.fixture
async def server(start_inference_at: StartInferenceAt) -> InferenceServer:
    return await start_inference_at(minilm_dir().parent)


@pytest.fixture
async def stub(server: InferenceServer) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


async def embed(
    stub: pb_grpc.GRPCInferenceServiceStub, texts: Sequence[str], **params: object
) -> np.ndarray:
    return vectors(await stub.ModelInfer(request(texts, **params)))


async def test_truncate_false_refuses_a_long_text_naming_it(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "1" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokens = len(tokenizer.encode(LONG).ids)
    assert tokens > minilm.MAX_LENGTH
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await embed(stub, [SHORT, LONG], truncate=False)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert f"text 1 has {tokens} tokens, expected at most max_length {minilm.MAX_LENGTH}" in (
        details
    ), details
    # Short texts pass with truncate=false; by default, and with truncate=true, a
    # long one is cut to max_length.
    short = await embed(stub, [SHORT], truncate=False)
    cut = await embed(stub, [SHORT, LONG])
    np.testing.assert_allclose(cut, await embed(stub, [SHORT, LONG], truncate=True), atol=1e-5)
    np.testing.assert_allclose(short[0], cut[0], atol=1e-5)


async def test_a_truncate_that_is_not_a_bool_is_refused(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await embed(stub, [SHORT], truncate="no")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter 'truncate': got str 'no', expected a bool" in (info.value.details() or "")


async def test_stream_requests_each_get_one_final_response(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    alone = [await embed(stub, [text]) for text in (SHORT, LONG)]

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        for i, text in enumerate((SHORT, LONG)):
            msg = request([text])
            msg.id = str(i)
            yield msg
        strict = request([LONG], truncate=False)
        strict.id = "strict"
        yield strict

    answers = [answer async for answer in stub.ModelStreamInfer(requests())]
    by_id = {a.infer_response.id: a for a in answers}
    assert sorted(by_id) == ["0", "1", "strict"] and len(answers) == 3
    for i in range(2):
        answer = by_id[str(i)]
        assert not answer.error_message
        assert answer.infer_response.parameters["triton_final_response"].bool_param
        np.testing.assert_allclose(vectors(answer.infer_response), alone[i], atol=1e-5)
    assert "expected at most max_length" in by_id["strict"].error_message


async def test_requested_outputs_are_all_a_reply_holds(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    everything = await stub.ModelInfer(request([SHORT, "hi"]))
    assert [o.name for o in everything.outputs] == ["embedding", "num_input_tokens"]
    only = request([SHORT, "hi"])
    only.outputs.add(name="embedding")
    reply = await stub.ModelInfer(only)
    assert [o.name for o in reply.outputs] == ["embedding"]
    assert len(reply.raw_output_contents) == 1
    np.testing.assert_array_equal(vectors(reply), vectors(everything))
    counts = request([SHORT, "hi"])
    counts.outputs.add(name="num_input_tokens")
    reply = await stub.ModelInfer(counts)
    assert [o.name for o in reply.outputs] == ["num_input_tokens"]
    assert token_counts(reply) == token_counts(everything)


async def test_tokens_embedded_are_counted_per_api_key_id(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(minilm.MAX_LENGTH)
    texts = [SHORT, LONG, "hi"]
    each = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    tokens = sum(each)
    assert each[1] == minilm.MAX_LENGTH  # the long text counts as the model ran it, cut
    reply = await stub.ModelInfer(request(texts), metadata=((KEY_ID_HEADER, "key-a"),))
    # Each text's own count, not the batch's padded length.
    assert token_counts(reply) == each
    await stub.ModelInfer(request(["hi"]))
    url = f"http://localhost:{server.grpc.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    model = {"model": minilm.NAME, "version": "1"}
    assert sample(text, "maas_embedding_input_tokens_total", key="key-a", **model) == tokens
    assert sample(text, "maas_embedding_input_tokens_total", key="anonymous", **model) == 3
    assert sample(text, "maas_embedding_texts_total", **model) == 4


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly `labels` in an exposition."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"no sample {name}{labels}")
