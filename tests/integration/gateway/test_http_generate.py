"""Triton's generate extension (POST .../generate and .../generate_stream) through a
real gateway and inference server over the demo chat model (tools/demo/smollm2.py).

The unary answer is the gRPC ModelInfer answer for the same inputs; the stream's
deltas join to it; refusals keep the statuses /infer gives; a client that goes
away mid-stream stops the generation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.tensors import decode, encode
from services.gateway.balancer import Health
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.chat_servers import start_chat
from tests.integration.gateway.conftest import StartGateway, until
from tests.integration.inference.generate_models import CHAT

KEYS = """
keys:
  - {id: team-a, key: key-a}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
  - {id: other, key: key-other, models: [elsewhere]}
"""
PROMPT = CHAT.format("What is the capital of France?")
FLAGS = {
    "exclude_input_in_output": True,
    "return_num_input_tokens": True,
    "return_num_output_tokens": True,
    "return_finish_reason": True,
}
# What Triton's vLLM users send: sampling options among the request parameters.
BODY: dict[str, Any] = {
    "text_input": PROMPT,
    "parameters": {"temperature": 0, "max_tokens": 24, **FLAGS},
}
LONG = 1500
PIN = {"x-maas-version": "1"}
Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]


@pytest.fixture
async def servers(
    start_inference_at: StartInferenceAt, start_gateway: StartGateway, tmp_path: Path
) -> tuple[InferenceServer, GatewayServer]:
    return await start_chat(start_inference_at, start_gateway, tmp_path, KEYS)


@pytest.fixture
def gateway(servers: tuple[InferenceServer, GatewayServer]) -> GatewayServer:
    return servers[1]


def url(gateway: GatewayServer, path: str) -> str:
    return f"http://localhost:{gateway.http_port}/v2/models/{path}"


def auth(key: str = "key-a") -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def post(
    gateway: GatewayServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = auth() if headers is None else headers
        async with session.post(url(gateway, path), data=data, headers=sent) as r:
            return r.status, await r.json(content_type=None), r.headers


async def events(gateway: GatewayServer, path: str, body: dict[str, Any]) -> list[Any]:
    """The JSON of each SSE event of a streamed answer."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session:
        async with session.post(url(gateway, path), json=body, headers=auth()) as r:
            assert r.status == 200, await r.text()
            assert r.content_type == "text/event-stream"
            async for line in r.content:
                if not line.strip():
                    continue
                assert line.startswith(b"data: "), line
                out.append(orjson.loads(line[len(b"data: ") :]))
    return out


def _tensor(request: pb.ModelInferRequest, name: str, array: np.ndarray) -> None:
    tensor = request.inputs.add(name=name)
    request.raw_input_contents.append(encode(array, tensor, raw=True) or b"")


async def grpc_answer(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[str, Any]:
    """The gRPC ModelInfer answer for BODY, as name -> first value."""
    request = pb.ModelInferRequest(model_name="smollm2")
    _tensor(request, "text_input", np.array([PROMPT.encode()], dtype=object))
    sampling = orjson.dumps({"temperature": 0, "max_tokens": 24})
    _tensor(request, "sampling_parameters", np.array([sampling], dtype=object))
    for name, value in FLAGS.items():
        _tensor(request, name, np.array([value], dtype=np.bool_))
    reply = await stub.ModelInfer(request, metadata=(("authorization", "Bearer key-a"),))
    out: dict[str, Any] = {}
    for i, tensor in enumerate(reply.outputs):
        value = decode(tensor, reply.raw_output_contents[i]).reshape(-1)[0]
        out[tensor.name] = value.decode() if isinstance(value, bytes) else int(value)
    return out


async def test_unary_is_the_grpc_answer_and_the_stream_joins_to_it(
    gateway: GatewayServer, connect: Connect
) -> None:
    expected = await grpc_answer(connect(gateway))
    assert "Paris" in expected["text_output"] and expected["num_output_tokens"] == 24

    status, whole, headers = await post(gateway, "smollm2/generate", BODY)
    assert status == 200, whole
    assert whole == {"model_name": "smollm2", "model_version": "1", **expected}
    assert headers["x-maas-version"] == "1"
    # The same with the inputs at the top level and sampling_parameters as an object,
    # and on the versioned path.
    top = {"text_input": PROMPT, "sampling_parameters": {"temperature": 0, "max_tokens": 24}}
    status, again, _ = await post(gateway, "smollm2/versions/1/generate", top | FLAGS)
    assert status == 200 and again == whole

    got = await events(gateway, "smollm2/generate_stream", BODY)
    assert len(got) > 2
    assert all(e["model_name"] == "smollm2" and e["model_version"] == "1" for e in got)
    assert "".join(e["text_output"] for e in got) == expected["text_output"]
    assert got[-1]["num_output_tokens"] == 24 and got[-1]["finish_reason"] == "length"
    assert got[-1]["num_input_tokens"] == expected["num_input_tokens"]


async def test_chat_messages_and_an_id(gateway: GatewayServer) -> None:
    body = {
        "id": "req-7",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "exclude_input_in_output": True,
        "parameters": {"temperature": 0, "max_tokens": 24},
    }
    status, chat, _ = await post(gateway, "smollm2/generate", body)
    assert status == 200, chat
    assert chat["id"] == "req-7" and "Paris" in chat["text_output"]


async def test_refusals_have_the_infer_statuses(gateway: GatewayServer) -> None:
    status, answer, _ = await post(gateway, "smollm2/generate", BODY, headers={})
    assert status == 401 and "error" in answer
    status, answer, _ = await post(gateway, "smollm2/generate", BODY, auth("key-other"))
    assert status == 403
    status, answer, _ = await post(gateway, "nope/generate", BODY)
    assert status == 404 and "nope" in answer["error"]
    status, answer, _ = await post(gateway, "smollm2/versions/9/generate", BODY)
    assert status == 404, answer
    assert (await post(gateway, "smollm2/generate", BODY, auth("key-slow")))[0] == 200
    status, answer, headers = await post(gateway, "smollm2/generate", BODY, auth("key-slow"))
    assert status == 429 and int(headers["retry-after"]) >= 1

    bad: list[tuple[Any, str]] = [
        (b"{not json", "malformed JSON"),
        ([1, 2], "expected a JSON object"),
        (BODY | {"prompt": "hi"}, "'prompt'"),
        (BODY | {"stream": "yes"}, "'stream'"),
        (BODY | {"parameters": {"temperature": 0, "beam_width": 4}}, "beam_width"),
        (BODY | {"parameters": {"seed": -1}}, "seed"),
        (BODY | {"parameters": []}, "'parameters'"),
        (BODY | {"sampling_parameters": "{x"}, "sampling_parameters"),
        (BODY | {"sampling_parameters": {"max_tokens": 2}}, "parameters.max_tokens"),
        ({"parameters": {"max_tokens": 2}}, "text_input"),
    ]
    for body, named in bad:
        for route in ("generate", "generate_stream"):
            status, answer, _ = await post(gateway, f"smollm2/{route}", body)
            assert status == 400 and named in answer["error"], (route, body, answer)


async def test_the_timeout_header_is_the_deadline(
    servers: tuple[InferenceServer, GatewayServer],
) -> None:
    """Past its deadline a generation is a 504 (unary) or, once streaming, an error
    event in the v2 routes' shape; the backend still serves the next call."""
    backend, gateway = servers
    slow = BODY | {"parameters": {"max_tokens": LONG, "temperature": 0}}
    headers = auth() | {"x-maas-timeout-ms": "500"}
    status, answer, _ = await post(gateway, "smollm2/generate", slow, headers)
    assert status == 504, answer
    await until(lambda: all(s.health is Health.HEALTHY for s in gateway.pool.states()))
    async with aiohttp.ClientSession() as session:
        stream = url(gateway, "smollm2/generate_stream")
        async with session.post(stream, json=slow, headers=headers) as r:
            assert r.status == 200, await r.text()
            lines = [line async for line in r.content if line.strip()]
    assert len(lines) > 1 and "text_output" in orjson.loads(lines[0][len(b"data: ") :])
    last = orjson.loads(lines[-1][len(b"data: ") :])
    assert set(last) == {"error"} and last["error"], last
    await until(lambda: _running(backend) == 0, seconds=30)


async def test_the_version_pin_header(gateway: GatewayServer) -> None:
    status, answer, headers = await post(gateway, "smollm2/generate", BODY, auth() | PIN)
    assert status == 200 and answer["model_version"] == "1" == headers["x-maas-version"]
    status, answer, _ = await post(
        gateway, "smollm2/generate", BODY, auth() | {"x-maas-version": "7"}
    )
    assert status == 404 and "7" in answer["error"], answer


def _running(backend: InferenceServer) -> float:
    return sum(
        s.value
        for family in backend.metrics_registry.collect()
        for s in family.samples
        if s.name == "maas_generate_running_sequences"
    )


async def test_disconnect_cancels_the_generation(
    servers: tuple[InferenceServer, GatewayServer],
) -> None:
    backend, gateway = servers
    body = {"text_input": PROMPT, "parameters": {"max_tokens": LONG}}
    seen = 0
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url(gateway, "smollm2/generate_stream"), json=body, headers=auth()
        )
        assert response.status == 200
        async for line in response.content:
            seen += line.startswith(b"data: ")
            if seen >= 4:
                break
        assert _running(backend) == 1
        response.close()  # the connection goes: the client is away
    await until(lambda: _running(backend) == 0, seconds=30)
