"""POST /v1/completions and /v1/chat/completions through a real gateway and inference
server over the demo chat model (tools/demo/smollm2.py).

A greedy streamed answer arrives as several SSE chunks whose text is the unary
answer's; usage and finish_reason come from the model; the gateway counts the
tokens per key; a client that goes away mid-stream stops the generation (the
engine's running sequences return to 0 long before max_tokens are made).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from services.gateway.balancer import Health
from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.chat_servers import start_chat
from tests.integration.gateway.conftest import StartGateway, backend_address, until

KEYS = """
keys:
  - {id: team-a, key: key-a}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
"""
QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "user", "content": QUESTION}]
PROMPT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"temperature": 0, "max_tokens": 24}
LONG = 1500


@pytest.fixture
async def servers(
    start_inference_at: StartInferenceAt, start_gateway: StartGateway, tmp_path: Path
) -> tuple[InferenceServer, GatewayServer]:
    return await start_chat(start_inference_at, start_gateway, tmp_path, KEYS)


@pytest.fixture
def gateway(servers: tuple[InferenceServer, GatewayServer]) -> GatewayServer:
    return servers[1]


def url(gateway: GatewayServer, path: str) -> str:
    return f"http://localhost:{gateway.http_port}{path}"


def headers(key: str = "key-a") -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def post(
    gateway: GatewayServer, path: str, body: dict[str, Any], key: str = "key-a"
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url(gateway, path), json=body, headers=headers(key)) as r:
            return r.status, await r.json()


async def events(gateway: GatewayServer, path: str, body: dict[str, Any]) -> list[Any]:
    """The JSON of each SSE event of a streamed answer, then the literal "[DONE]"."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session:
        async with session.post(url(gateway, path), json=body, headers=headers()) as r:
            assert r.status == 200, await r.text()
            assert r.content_type == "text/event-stream"
            async for line in r.content:
                if not line.strip():
                    continue
                assert line.startswith(b"data: "), line
                data = line[len(b"data: ") :].strip()
                out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def tokens(gateway: GatewayServer, kind: str, key: str = "team-a") -> float:
    labels = {"key": key, "model": "smollm2", "kind": kind}
    value = gateway.metrics_registry.get_sample_value("maas_gateway_tokens_total", labels)
    return value or 0.0


async def test_chat_stream_joins_to_the_unary_answer(gateway: GatewayServer) -> None:
    status, whole = await post(
        gateway, "/v1/chat/completions", {"model": "smollm2", "messages": MESSAGES, **GREEDY}
    )
    assert status == 200, whole
    assert whole["object"] == "chat.completion" and whole["model"] == "smollm2"
    choice = whole["choices"][0]
    assert choice["message"]["role"] == "assistant" and "Paris" in choice["message"]["content"]
    usage = whole["usage"]
    assert usage["completion_tokens"] == 24 and choice["finish_reason"] == "length"
    assert usage["total_tokens"] == usage["prompt_tokens"] + 24 and usage["prompt_tokens"] > 0
    assert tokens(gateway, "prompt") == usage["prompt_tokens"]
    assert tokens(gateway, "completion") == 24

    body = {"model": "smollm2", "messages": MESSAGES, "stream": True, **GREEDY}
    chunks = await events(
        gateway, "/v1/chat/completions", body | {"stream_options": {"include_usage": True}}
    )
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [
        c["choices"][0]["delta"]["content"]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == choice["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    assert tokens(gateway, "completion") == 48

    plain = await events(gateway, "/v1/chat/completions", body)
    assert "usage" not in plain[-2] and plain[-1] == "[DONE]"


async def test_completion_and_its_stream(gateway: GatewayServer) -> None:
    status, whole = await post(
        gateway, "/v1/completions", {"model": "smollm2", "prompt": PROMPT, **GREEDY}
    )
    assert status == 200, whole
    assert whole["object"] == "text_completion"
    text = whole["choices"][0]["text"]
    assert "Paris" in text and whole["usage"]["completion_tokens"] == 24
    body = {"model": "smollm2", "prompt": PROMPT, "stream": True, **GREEDY}
    chunks = (await events(gateway, "/v1/completions", body))[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    pieces = [c["choices"][0]["text"] for c in chunks]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stop_and_seeded_sampling(gateway: GatewayServer) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 24, "stop": [" Paris"]}
    status, stopped = await post(gateway, "/v1/chat/completions", body | {"temperature": 0})
    assert status == 200, stopped
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert "Paris" not in stopped["choices"][0]["message"]["content"]
    seeded = body | {"temperature": 1.0, "seed": 7, "stop": None}
    first = await post(gateway, "/v1/chat/completions", seeded)
    second = await post(gateway, "/v1/chat/completions", seeded)
    assert first[0] == 200 and first[1]["choices"] == second[1]["choices"]


def _running(backend: InferenceServer) -> float:
    values = [
        s.value
        for family in backend.metrics_registry.collect()
        for s in family.samples
        if s.name == "maas_generate_running_sequences"
    ]
    return sum(values)


def _made(backend: InferenceServer) -> float:
    return sum(
        s.value
        for family in backend.metrics_registry.collect()
        for s in family.samples
        if s.name == "maas_generate_output_tokens_total"
    )


async def test_disconnect_cancels_the_generation(
    servers: tuple[InferenceServer, GatewayServer],
) -> None:
    backend, gateway = servers
    body = {"model": "smollm2", "messages": MESSAGES, "stream": True, "max_tokens": LONG}
    before = _made(backend)
    seen = 0
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url(gateway, "/v1/chat/completions"), json=body, headers=headers()
        )
        assert response.status == 200
        async for line in response.content:
            seen += line.startswith(b"data: ")
            if seen >= 4:
                break
        assert _running(backend) == 1
        response.close()  # the connection goes: the client is away
    await until(lambda: _running(backend) == 0, seconds=30)
    made = _made(backend) - before
    assert 0 < made < LONG / 2  # tokens were made, and far fewer than asked


async def test_refusals_before_the_stream_keep_their_status(gateway: GatewayServer) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "stream": True, **GREEDY}
    assert (await post(gateway, "/v1/chat/completions", body | {"stream": False}, "key-slow"))[
        0
    ] == 200
    status, answer = await post(gateway, "/v1/chat/completions", body, "key-slow")
    assert status == 429 and answer["error"]["type"] == "rate_limit_error"
    status, answer = await post(gateway, "/v1/chat/completions", body | {"seed": -1})
    assert status == 400 and answer["error"]["param"] == "seed"
    status, answer = await post(gateway, "/v1/chat/completions", body | {"model": "nope"})
    assert status == 404 and answer["error"]["code"] == "model_not_found"


async def test_concurrent_streams(gateway: GatewayServer) -> None:
    questions = ["Name three primary colours.", "What does a bee make?", QUESTION]
    bodies = [
        {"model": "smollm2", "messages": [{"role": "user", "content": q}], "stream": True, **GREEDY}
        for q in questions
    ]
    got = await asyncio.gather(*(events(gateway, "/v1/chat/completions", b) for b in bodies))
    for chunks in got:
        assert chunks[-1] == "[DONE]"
        assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        assert text.strip()


async def test_a_stream_holds_one_of_the_keys_stream_slots(
    servers: tuple[InferenceServer, GatewayServer], start_gateway: StartGateway, tmp_path: Path
) -> None:
    backend, _ = servers
    keys = tmp_path / "one-stream.yaml"
    keys.write_text(KEYS)
    gateway = await start_gateway(
        backends=backend_address(backend), api_keys_file=str(keys), max_streams_per_key=1
    )
    body = {"model": "smollm2", "messages": MESSAGES, "stream": True, "max_tokens": LONG}
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url(gateway, "/v1/chat/completions"), json=body, headers=headers()
        )
        assert response.status == 200
        await response.content.readline()  # the first chunk: the stream is open
        status, answer = await post(gateway, "/v1/chat/completions", body)
        assert status == 429 and "at most 1" in answer["error"]["message"]
        response.close()
    await until(lambda: _running(backend) == 0, seconds=30)
    # The slot is given back: the next stream runs.
    assert (await events(gateway, "/v1/chat/completions", body | GREEDY))[-1] == "[DONE]"


async def test_the_timeout_header_is_the_deadline(
    servers: tuple[InferenceServer, GatewayServer],
) -> None:
    """A generation past its deadline is a 504 (unary) or a timeout error event (once
    streaming), and the backend it ran on still serves the next call: the gateway checks
    a backend that missed a deadline, and its models are not unknown meanwhile."""
    backend, gateway = servers
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": LONG}
    timed = headers() | {"x-maas-timeout-ms": "500"}
    chat = url(gateway, "/v1/chat/completions")
    async with aiohttp.ClientSession() as session:
        async with session.post(chat, json=body, headers=timed) as r:
            assert r.status == 504, await r.text()
            assert (await r.json())["error"]["type"] == "timeout_error"
        status, answer = await post(gateway, "/v1/chat/completions", body | GREEDY)
        assert status == 200, answer
        await until(lambda: all(s.health is Health.HEALTHY for s in gateway.pool.states()))
        # Long enough for the first token on a busy machine (the stream must start
        # before its deadline), far too short for LONG tokens.
        streamed = headers() | {"x-maas-timeout-ms": "2000"}
        async with session.post(chat, json=body | {"stream": True}, headers=streamed) as r:
            assert r.status == 200, await r.text()
            last = [line async for line in r.content if line.strip()][-1]
        assert orjson.loads(last[len(b"data: ") :])["error"]["type"] == "timeout_error"
    await until(lambda: _running(backend) == 0, seconds=30)
