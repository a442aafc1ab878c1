"""ModelStreamInfer on a decoupled (generative) model, through a real inference server.

The demo chat model (tools/demo/smollm2.py) streams a greedy completion as many
responses, the last flagged `triton_final_response`; on request the flag comes on an
extra empty response, as Triton sends it. A stream closed mid-generation hands the
sequence's cache back, the key id in `x-maas-key-id` reaches the per-key token
counters, and ModelConfig says the model is decoupled.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from maas_proto.inference import model_config_pb2 as mc
from prometheus_client.parser import text_string_to_metric_families

from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.generate_models import CHAT, repository_with

MODEL = "smollm2"
CONFIG = "task: generate\ngenerate:\n  max_sequences: 4\n  max_context: 512\nwarmup: []\n"
FINAL = "triton_final_response"
PROMPT = CHAT.format("Name three primary colours.")


def generate_request(
    prompt: str, max_tokens: int, *, empty_final: bool = False, id: str = ""
) -> pb.ModelInferRequest:
    """A vLLM-style request: text_input, sampling_parameters, stream and exclude flags."""
    request = pb.ModelInferRequest(model_name=MODEL, id=id)
    request.parameters["binary_data_output"].bool_param = False
    if empty_final:
        request.parameters["triton_enable_empty_final_response"].bool_param = True
    for name, text in (
        ("text_input", prompt),
        ("sampling_parameters", f'{{"max_tokens": {max_tokens}}}'),
    ):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
    for name in ("stream", "exclude_input_in_output"):
        tensor = request.inputs.add(name=name, datatype="BOOL", shape=[1])
        tensor.contents.bool_contents.append(True)
    return request


def text_of(response: pb.ModelInferResponse) -> str:
    for tensor in response.outputs:
        if tensor.name == "text_output":
            return b"".join(tensor.contents.bytes_contents).decode()
    return ""


def scrape(port: int, name: str, **labels: str) -> float:
    """A sample of the server's metrics port (0 when absent)."""
    text = urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.05)


async def one(request: pb.ModelInferRequest) -> AsyncIterator[pb.ModelInferRequest]:
    yield request


@pytest.fixture
async def served(
    tmp_path: Path, start_inference_at: StartInferenceAt
) -> AsyncIterator[tuple[InferenceServer, pb_grpc.GRPCInferenceServiceStub]]:
    server = await start_inference_at(repository_with(tmp_path / "repo", CONFIG))
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        yield server, pb_grpc.GRPCInferenceServiceStub(channel)


Served = tuple[InferenceServer, pb_grpc.GRPCInferenceServiceStub]


async def test_a_greedy_stream_ends_in_the_final_flag_and_equals_the_unary_text(
    served: Served,
) -> None:
    _, stub = served
    request = generate_request(PROMPT, 16, id="g")
    replies = [r async for r in stub.ModelStreamInfer(one(request), timeout=60)]
    assert not any(r.error_message for r in replies)
    flags = [r.infer_response.parameters[FINAL].bool_param for r in replies]
    assert len(replies) > 2, "a 16-token completion came in too few responses"
    assert flags == [False] * (len(replies) - 1) + [True]
    assert all(r.infer_response.id == "g" for r in replies)
    streamed = "".join(text_of(r.infer_response) for r in replies)
    whole = await stub.ModelInfer(generate_request(PROMPT, 16), timeout=60)
    assert streamed == text_of(whole) and streamed


async def test_the_final_flag_comes_on_an_empty_response_when_asked(served: Served) -> None:
    _, stub = served
    request = generate_request(PROMPT, 8, empty_final=True)
    replies = [r async for r in stub.ModelStreamInfer(one(request), timeout=60)]
    *parts, last = replies
    assert parts and all(not r.infer_response.parameters[FINAL].bool_param for r in parts)
    assert last.infer_response.parameters[FINAL].bool_param is True
    assert not last.infer_response.outputs and not last.error_message
    assert "".join(text_of(r.infer_response) for r in parts)


async def test_closing_a_stream_mid_generation_frees_the_sequence(served: Served) -> None:
    server, stub = served
    port = server.grpc.metrics_port
    reserved = "maas_generate_cache_reserved_tokens"
    before = scrape(port, reserved, model=MODEL)

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield generate_request("1, 2, 3, 4,", 400)
        await asyncio.Event().wait()  # the stream stays open until cancelled

    call = stub.ModelStreamInfer(requests(), timeout=60)
    first = await call.read()
    assert not first.infer_response.parameters[FINAL].bool_param
    assert scrape(port, reserved, model=MODEL) > before
    assert scrape(port, "maas_generate_running_sequences", model=MODEL) == 1
    call.cancel()
    await until(lambda: scrape(port, reserved, model=MODEL) == before)
    assert scrape(port, "maas_generate_running_sequences", model=MODEL) == 0
    await until(lambda: server.app.statistics(MODEL, "1")[0].fail.count == 1)


async def test_the_key_id_reaches_the_per_key_token_counts(served: Served) -> None:
    server, stub = served
    metadata = (("x-maas-key-id", "team-a"),)
    replies = [
        r
        async for r in stub.ModelStreamInfer(
            one(generate_request(PROMPT, 4)), metadata=metadata, timeout=60
        )
    ]
    assert replies and not replies[-1].error_message
    await stub.ModelInfer(generate_request(PROMPT, 4), metadata=metadata, timeout=60)
    port = server.grpc.metrics_port
    counted = scrape(port, "maas_generate_completion_tokens_total", model=MODEL, key="team-a")
    assert counted == 8


async def test_model_config_reports_a_decoupled_model(served: Served) -> None:
    _, stub = served
    reply = await stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10)
    assert reply.config.model_transaction_policy.decoupled is True
    inputs = {i.name: i for i in reply.config.input}
    assert inputs["text_input"].optional and inputs["sampling_parameters"].optional
    assert inputs["text_input"].data_type == mc.TYPE_STRING
