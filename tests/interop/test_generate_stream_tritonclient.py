"""tritonclient's streaming API, unchanged, on a generative model through the gateway.

Servers are subprocesses: inference over the demo chat model (tools/demo/smollm2.py)
and a gateway with one API key. `start_stream` + `async_stream_infer` receive a
greedy completion token by token, ending in `triton_final_response` (or an empty
final response when asked), and the text equals the unary ModelInfer answer.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc

from tests.demo_models import demo_repository
from tests.servers import ServiceProcess, hashed_key, keyed_gateway

KEY = "stream-key"
HEADERS = {"authorization": f"Bearer {KEY}"}
MODEL = "smollm2"
PROMPT = "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Inference over smollm2, a gateway with one key in front."""
    workdir = tmp_path_factory.mktemp("generate-stream")
    keys = "keys:\n" + hashed_key("streams", KEY)
    with keyed_gateway(workdir, demo_repository(MODEL), keys) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: ServiceProcess) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(gateway.address)
    deadline = time.monotonic() + 120
    while not c.is_model_ready(MODEL, headers=HEADERS):
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.2)
    yield c
    c.close()


def inputs(prompt: str) -> list[tc.InferInput]:
    """Triton vLLM backend inputs: text, sampling parameters, stream, exclude input."""
    values = {
        "text_input": np.array([prompt.encode()], dtype=object),
        "sampling_parameters": np.array([f'{{"max_tokens": {MAX_TOKENS}}}'.encode()], dtype=object),
        "stream": np.array([True]),
        "exclude_input_in_output": np.array([True]),
    }
    made = []
    for name, value in values.items():
        tensor = tc.InferInput(name, [1], "BYTES" if value.dtype == object else "BOOL")
        tensor.set_data_from_numpy(value)
        made.append(tensor)
    return made


def streamed(client: tc.InferenceServerClient, *, empty_final: bool) -> list[tc.InferResult]:
    """Every response of one streamed request, up to its final one."""
    results: queue.Queue[tuple[tc.InferResult | None, Exception | None]] = queue.Queue()

    def callback(result: tc.InferResult | None, error: Exception | None) -> None:
        results.put((result, error))

    client.start_stream(callback=callback, headers=HEADERS)
    try:
        client.async_stream_infer(
            MODEL, inputs(PROMPT), request_id="s", enable_empty_final_response=empty_final
        )
        got = []
        while True:
            result, error = results.get(timeout=60)
            assert error is None, error
            assert result is not None
            got.append(result)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return got
    finally:
        client.stop_stream()


def text(result: tc.InferResult) -> str:
    array = result.as_numpy("text_output")
    return "" if array is None else b"".join(array.tolist()).decode()


def test_a_greedy_completion_streams_token_by_token_and_equals_the_unary_answer(
    client: tc.InferenceServerClient,
) -> None:
    results = streamed(client, empty_final=False)
    assert len(results) > 2, "the completion came in too few responses"
    assert all(r.get_response().id == "s" for r in results)
    pieces = [text(r) for r in results]
    unary = text(client.infer(MODEL, inputs(PROMPT), headers=HEADERS))
    assert "".join(pieces) == unary and unary
    print(f"{len(results)} stream responses for {MAX_TOKENS} tokens: {unary!r}")


def test_the_final_flag_comes_on_an_empty_response_when_asked(
    client: tc.InferenceServerClient,
) -> None:
    *parts, last = streamed(client, empty_final=True)
    assert not last.get_response().outputs
    assert parts and all(
        not r.get_response().parameters["triton_final_response"].bool_param for r in parts
    )
    assert "".join(text(r) for r in parts)


def test_model_config_says_decoupled(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL, headers=HEADERS).config
    assert config.model_transaction_policy.decoupled is True
