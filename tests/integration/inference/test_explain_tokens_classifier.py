"""Token attributions (method `tokens`) for a text classifier, through a real
inference server's Explainer: the value explained is the class probability.

The classifier is built here with onnx.helper (PyTorch cannot export string
inputs, as for tests/models.py's BYTES model): the text split on spaces
(com.microsoft Tokenizer), word counts (TfIdfVectorizer), a linear layer and a
softmax. "cat" votes for class 1, "dog" for class 0, "mat" a little for 1, and
every other word counts for nothing, so the right answer is known. Its
tokenizer.json (a whitespace word-level tokenizer) sits beside model.onnx."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc
from onnx import TensorProto
from onnx import helper as oh
from tokenizers import Tokenizer, models, pre_tokenizers

from services.common.tensors import decode
from tests.integration.conftest import StartInferenceAt

WORDS = ("the", "cat", "sat", "on", "mat", "dog")
# Logit weights per word for classes (0, 1).
WEIGHTS = {"cat": (0.0, 3.0), "mat": (0.0, 0.5), "dog": (2.0, 0.0)}
TEXT = "the cat sat on the dog mat"


def build_classifier(version: Path) -> None:
    """model.onnx and tokenizer.json of the word-count classifier in `version`."""
    version.mkdir(parents=True)
    weights = np.array([WEIGHTS.get(w, (0.0, 0.0)) for w in WORDS], np.float32)
    nodes = [
        oh.make_node(
            "Tokenizer",
            ["text"],
            ["words"],
            domain="com.microsoft",
            mark=0,
            pad_value="#",
            separators=[" "],
            mincharnum=1,
        ),
        oh.make_node(
            "TfIdfVectorizer",
            ["words"],
            ["counts"],
            mode="TF",
            min_gram_length=1,
            max_gram_length=1,
            max_skip_count=0,
            ngram_counts=[0],
            ngram_indexes=list(range(len(WORDS))),
            pool_strings=list(WORDS),
        ),
        oh.make_node("MatMul", ["counts", "weights"], ["logits"]),
        oh.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = oh.make_graph(
        nodes,
        "word_counts",
        [oh.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [oh.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [oh.make_tensor("weights", TensorProto.FLOAT, list(weights.shape), weights.ravel())],
    )
    opsets = [oh.make_opsetid("", 18), oh.make_opsetid("com.microsoft", 1)]
    model = oh.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(version / "model.onnx"))
    vocabulary = {w: i for i, w in enumerate(WORDS)} | {"[UNK]": len(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(version / "tokenizer.json"))


@pytest.fixture
async def stub(
    start_inference_at: StartInferenceAt, tmp_path: Path
) -> AsyncIterator[explain_pb2_grpc.ExplainerStub]:
    build_classifier(tmp_path / "repository" / "words" / "1")
    server = await start_inference_at(tmp_path / "repository")
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        yield explain_pb2_grpc.ExplainerStub(channel)


def request(mode: str = "leave_one_out", target: int | None = None) -> explain_pb2.ExplainRequest:
    message = explain_pb2.ExplainRequest(model_name="words", method="tokens")
    tensor = message.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(TEXT.encode())
    message.parameters["mode"].string_param = mode
    if target is not None:
        message.target = target
    return message


def attributions(reply: explain_pb2.ExplainResponse) -> dict[str, float]:
    raw = list(reply.raw_attribution_contents)
    tensors = {
        out.name: decode(out, raw[i] if raw else None) for i, out in enumerate(reply.attributions)
    }
    words = [w.decode() for w in tensors["text.tokens"]]
    assert words == TEXT.split()
    # "the" twice: the words are unique here but for it, which weighs nothing.
    return {w: float(v) for w, v in zip(words, tensors["text"], strict=True)}


async def test_each_word_gets_its_vote_for_the_predicted_class(
    stub: explain_pb2_grpc.ExplainerStub,
) -> None:
    reply = await stub.Explain(request())
    assert (reply.output, reply.target) == ("probabilities", 1)
    values = attributions(reply)
    assert values["cat"] > values["mat"] > 0 > values["dog"]
    assert all(values[w] == 0 for w in ("the", "sat", "on")), values
    assert reply.base_value == pytest.approx(0.5)  # no word: the two logits tie
    assert reply.output_value == pytest.approx(1 / (1 + np.exp(2.0 - 3.5)), abs=1e-6)


async def test_the_other_class_gets_the_opposite_attributions(
    stub: explain_pb2_grpc.ExplainerStub,
) -> None:
    one = attributions(await stub.Explain(request(target=1)))
    zero = attributions(await stub.Explain(request(target=0)))
    for word in TEXT.split():
        assert zero[word] == pytest.approx(-one[word], abs=1e-6)


async def test_kernel_shap_over_words_adds_up_to_the_change(
    stub: explain_pb2_grpc.ExplainerStub,
) -> None:
    reply = await stub.Explain(request(mode="kernel_shap"))
    values = attributions(reply)
    assert values["cat"] > values["mat"] > 0 > values["dog"]
    assert all(abs(values[w]) < 1e-9 for w in ("the", "sat", "on")), values
    total = sum(values.values())
    assert total == pytest.approx(reply.output_value - reply.base_value, abs=1e-6)
    assert reply.error_estimate < 1e-6


async def test_a_target_outside_the_output_is_refused_naming_it(
    stub: explain_pb2_grpc.ExplainerStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Explain(request(target=2))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("target: 2 is out of range"), caught.value


async def test_a_text_output_is_refused_naming_the_output(
    test_models: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    # dt_bytes: BYTES in, BYTES out; there is no number to explain.
    shutil.copytree(test_models / "dt_bytes", tmp_path / "repository" / "dt_bytes")
    server = await start_inference_at(tmp_path / "repository")
    message = explain_pb2.ExplainRequest(model_name="dt_bytes", method="tokens")
    tensor = message.inputs.add(name="x", datatype="BYTES", shape=[1, 1])
    tensor.contents.bytes_contents.append(b"the cat")
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await explain_pb2_grpc.ExplainerStub(channel).Explain(message)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert details.startswith("output 'y'") and "BYTES" in details, details
