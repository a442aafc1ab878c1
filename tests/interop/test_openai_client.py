"""The official `openai` package, unchanged, against the gateway's /v1 routes (issue C).

Servers are subprocesses over the demo models (tools/demo: minilm for embeddings,
smollm2 for chat and completions). The client lists the models, embeds, completes,
chat-completes and streams: a streamed greedy answer arrives as several chunks
whose text is the unary answer's, and its last chunk carries the usage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.demo_models import demo_repository
from tests.servers import ServiceProcess, hashed_key, keyed_gateway

KEY = "openai-key"
QUESTION = "What is the capital of France?"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Inference over minilm and smollm2, a gateway with one key and one limited key."""
    workdir = tmp_path_factory.mktemp("openai")
    keys = (
        "keys:\n"
        + hashed_key("openai", KEY)
        + "  - {id: embed-only, key: embed-key, models: [minilm]}\n"
    )
    with keyed_gateway(workdir, demo_repository("minilm", "smollm2"), keys) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gateway: ServiceProcess) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key=KEY, max_retries=0
    )
    deadline = time.monotonic() + 120
    while {m.id for m in c.models.list()} != {"minilm", "smollm2"}:
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.2)
    yield c
    c.close()


def test_models_are_listed(client: openai.OpenAI) -> None:
    models = sorted(client.models.list(), key=lambda m: m.id)
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("minilm", "model", "maas"),
        ("smollm2", "model", "maas"),
    ]
    assert client.models.retrieve("minilm").id == "minilm"


def test_embeddings(client: openai.OpenAI) -> None:
    texts = ["I love eating pizza.", "Pasta is my favourite dinner.", "Stocks fell today."]
    got = client.embeddings.create(model="minilm", input=texts)
    vectors = np.array([d.embedding for d in got.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]
    # The package asks for base64 unless told otherwise, and decodes it itself.
    one = client.embeddings.create(model="minilm", input=texts[0])
    assert np.allclose(one.data[0].embedding, vectors[0], atol=1e-5)
    assert got.usage is not None


def test_chat_completion_and_its_stream(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=MAX_TOKENS
    )
    answer = whole.choices[0].message.content
    assert answer and "Paris" in answer
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length")
    usage = whole.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    stream = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == usage
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_completion_and_its_stream(client: openai.OpenAI) -> None:
    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    whole = client.completions.create(
        model="smollm2", prompt=prompt, temperature=0, max_tokens=MAX_TOKENS
    )
    text = whole.choices[0].text
    assert "Paris" in text
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="smollm2", prompt=prompt, stream=True, temperature=0, max_tokens=MAX_TOKENS
        )
    ]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == text


def test_errors_are_the_packages_exceptions(client: openai.OpenAI, gateway: ServiceProcess) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert caught.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="smollm2", input="hi")
    other = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key="embed-key", max_retries=0
    )
    with pytest.raises(openai.PermissionDeniedError):
        other.completions.create(model="smollm2", prompt="hi")
    assert [m.id for m in other.models.list()] == ["minilm"]
    bad = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.http_port}/v1", api_key="wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
