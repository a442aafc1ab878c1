"""Token attributions (method `tokens`) through a real inference server's Explainer:
the demo all-MiniLM-L6-v2 (tools/demo/minilm.py), explained by its similarity to a
reference text, token by token."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc
from tokenizers import Tokenizer

from services.common.tensors import decode
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.embedding_models import minilm_dir, repository_with
from tests.integration.inference.generate_models import repository_with as generate_repository
from tests.integration.inference.generate_models import smollm2_dir
from tools.demo import minilm, smollm2

TEXT = "The cat sat on the mat"
REFERENCE = "a cat"


@pytest.fixture(scope="module")
def built() -> Path:
    return minilm_dir()


def explain_request(
    text: str, mode: str | None = None, reference: str | None = REFERENCE, **ints: int
) -> explain_pb2.ExplainRequest:
    request = explain_pb2.ExplainRequest(model_name=minilm.NAME, method="tokens")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(text.encode())
    if reference is not None:
        request.parameters["reference_text"].string_param = reference
    if mode is not None:
        request.parameters["mode"].string_param = mode
    for name, value in ints.items():
        request.parameters[name].int64_param = value
    return request


def attributions(reply: explain_pb2.ExplainResponse) -> tuple[np.ndarray, list[str]]:
    raw = list(reply.raw_attribution_contents)
    tensors = {
        out.name: decode(out, raw[i] if raw else None) for i, out in enumerate(reply.attributions)
    }
    words = [w.decode() if isinstance(w, bytes) else str(w) for w in tensors["text.tokens"]]
    return np.asarray(tensors["text"], np.float64), words


def tokenizer_tokens(built: Path, text: str) -> list[str]:
    tokenizer = Tokenizer.from_file(str(built / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer.encode(text, add_special_tokens=False).tokens


async def test_the_word_the_reference_shares_gets_the_largest_attribution(
    built: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    server = await start_inference_at(repository_with(tmp_path, minilm.CONFIG))
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        reply = await stub.Explain(explain_request(TEXT))
    values, tokens = attributions(reply)
    expected = tokenizer_tokens(built, TEXT)
    assert tokens == expected == ["the", "cat", "sat", "on", "the", "mat"]
    assert values.shape == (len(expected),)
    assert tokens[int(values.argmax())] == "cat", dict(zip(tokens, values, strict=True))
    assert reply.method == "tokens" and reply.output == "embedding"
    # The full text is closer to "a cat" than the empty one, and leave-one-out's
    # non-additivity is reported, not hidden.
    assert reply.output_value > reply.base_value
    gap = abs(values.sum() - (reply.output_value - reply.base_value))
    assert reply.error_estimate == pytest.approx(gap, abs=1e-9)
    # The full text, the empty one, the reference and one text per token.
    assert reply.evaluations == len(expected) + 3


async def test_kernel_shap_over_tokens_adds_up(
    built: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    server = await start_inference_at(repository_with(tmp_path, minilm.CONFIG))
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        reply = await stub.Explain(explain_request(TEXT, mode="kernel_shap"))
    values, tokens = attributions(reply)
    assert tokens == tokenizer_tokens(built, TEXT)
    assert tokens[int(values.argmax())] == "cat"
    assert values.sum() == pytest.approx(reply.output_value - reply.base_value, abs=1e-6)
    assert reply.error_estimate < 1e-6


async def test_bad_token_requests_name_the_field(
    built: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    server = await start_inference_at(repository_with(tmp_path, minilm.CONFIG))
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = explain_pb2_grpc.ExplainerStub(channel)
        cases = {
            "parameters.reference_text": explain_request(TEXT, reference=None),
            "parameters.mode": explain_request(TEXT, mode="integrated_gradients"),
            # 6 tokens need 9 evaluations.
            "max_evaluations": explain_request(TEXT, max_evaluations=5),
        }
        for field, request in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Explain(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in (caught.value.details() or ""), caught.value.details()


async def test_a_generative_model_is_refused_naming_the_method(
    start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    built = smollm2_dir()
    root = generate_repository(tmp_path, (built / "config.yaml").read_text())
    server = await start_inference_at(root)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        # Every method: none of them can read a stream of answers as one output.
        for method in ("tokens", "occlusion", "kernel_shap"):
            request = explain_pb2.ExplainRequest(
                model_name=smollm2.NAME, method=method, output="num_output_tokens"
            )
            tensor = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
            tensor.contents.bytes_contents.append(b"Hello there")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await explain_pb2_grpc.ExplainerStub(channel).Explain(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            details = caught.value.details() or ""
            assert details.startswith(f"method: '{method}' explains"), details
