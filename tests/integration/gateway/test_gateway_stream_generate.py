"""A generative model's token stream through the gateway, over real servers.

Inference serves the demo chat model behind a service token; the gateway holds an
API key and relays each stream request over a backend stream of its own: tokens
arrive one response at a time ending in `triton_final_response`, the authenticated
key's id (never one the client names) reaches inference's per-key token counts, a
bad request is answered with an error while the stream goes on, and a client that
cancels, or whose deadline passes, ends the generation on the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.gateway.main import GatewayServer
from services.inference.main import InferenceServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.conftest import StartGateway, backend_address
from tests.integration.inference.generate_models import repository_with
from tests.integration.inference.test_stream_generate import (
    CONFIG,
    FINAL,
    MODEL,
    PROMPT,
    generate_request,
    scrape,
    text_of,
    until,
)

Connect = Callable[[GatewayServer], pb_grpc.GRPCInferenceServiceStub]
KEY = (("authorization", "Bearer secret-a"),)
TOKEN = "service-token"


@pytest.fixture
async def chain(
    tmp_path: Path,
    start_inference_at: StartInferenceAt,
    start_gateway: StartGateway,
    connect: Connect,
) -> tuple[InferenceServer, pb_grpc.GRPCInferenceServiceStub]:
    backend = await start_inference_at(
        repository_with(tmp_path / "repo", CONFIG), service_token=TOKEN
    )
    gateway = await start_gateway(
        backends=backend_address(backend), api_keys="team-a:secret-a", backend_token=TOKEN
    )
    stub = connect(gateway)
    # The gateway learns the backend's catalog in the background.
    await stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=KEY, timeout=30)
    return backend, stub


Chain = tuple[InferenceServer, pb_grpc.GRPCInferenceServiceStub]


async def send(*requests: pb.ModelInferRequest) -> AsyncIterator[pb.ModelInferRequest]:
    for request in requests:
        yield request


async def test_tokens_stream_through_the_gateway_and_equal_the_unary_text(chain: Chain) -> None:
    _, stub = chain
    replies = [
        r
        async for r in stub.ModelStreamInfer(
            send(generate_request(PROMPT, 16, id="g")), metadata=KEY, timeout=60
        )
    ]
    assert len(replies) > 2 and not any(r.error_message for r in replies)
    flags = [r.infer_response.parameters[FINAL].bool_param for r in replies]
    assert flags == [False] * (len(replies) - 1) + [True]
    assert {r.infer_response.model_version for r in replies} == {"1"}
    streamed = "".join(text_of(r.infer_response) for r in replies)
    whole = await stub.ModelInfer(generate_request(PROMPT, 16), metadata=KEY, timeout=60)
    assert streamed == text_of(whole) and streamed
    config = await stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), metadata=KEY, timeout=10)
    assert config.config.model_transaction_policy.decoupled is True


async def test_the_gateway_passes_the_key_id_and_drops_a_named_one(chain: Chain) -> None:
    backend, stub = chain
    metadata = (*KEY, ("x-maas-key-id", "someone-else"))
    replies = [
        r
        async for r in stub.ModelStreamInfer(
            send(generate_request(PROMPT, 4)), metadata=metadata, timeout=60
        )
    ]
    assert replies and not replies[-1].error_message
    await stub.ModelInfer(generate_request(PROMPT, 4), metadata=metadata, timeout=60)
    port = backend.grpc.metrics_port
    tokens = "maas_generate_completion_tokens_total"
    assert scrape(port, tokens, model=MODEL, key="team-a") == 8
    assert scrape(port, tokens, model=MODEL, key="someone-else") == 0


async def test_a_bad_request_is_answered_and_the_stream_goes_on(chain: Chain) -> None:
    _, stub = chain
    bad = generate_request(PROMPT, 4, id="bad")
    bad.inputs[1].contents.bytes_contents[0] = b'{"max_token": 4}'
    replies = [
        r
        async for r in stub.ModelStreamInfer(
            send(bad, generate_request(PROMPT, 4, id="ok")), metadata=KEY, timeout=60
        )
    ]
    failed = [r for r in replies if r.error_message]
    assert len(failed) == 1 and failed[0].infer_response.id == "bad"
    assert "max_token" in failed[0].error_message
    assert failed[0].infer_response.parameters["maas_error_status"].string_param == (
        "INVALID_ARGUMENT"
    )
    ok = [r for r in replies if r.infer_response.id == "ok"]
    assert ok and ok[-1].infer_response.parameters[FINAL].bool_param is True


async def test_cancelling_the_client_call_frees_the_generation(chain: Chain) -> None:
    backend, stub = chain
    port = backend.grpc.metrics_port
    reserved = "maas_generate_cache_reserved_tokens"
    before = scrape(port, reserved, model=MODEL)

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield generate_request("1, 2, 3, 4,", 400)
        await asyncio.Event().wait()

    call = stub.ModelStreamInfer(requests(), metadata=KEY, timeout=60)
    first = await call.read()
    assert not first.error_message and not first.infer_response.parameters[FINAL].bool_param
    assert scrape(port, "maas_generate_running_sequences", model=MODEL) == 1
    call.cancel()
    await until(lambda: scrape(port, reserved, model=MODEL) == before)
    assert scrape(port, "maas_generate_running_sequences", model=MODEL) == 0


async def test_a_passed_deadline_ends_the_generation(chain: Chain) -> None:
    backend, stub = chain
    port = backend.grpc.metrics_port
    reserved = "maas_generate_cache_reserved_tokens"
    before = scrape(port, reserved, model=MODEL)

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield generate_request("1, 2, 3, 4,", 450)
        await asyncio.Event().wait()

    call = stub.ModelStreamInfer(requests(), metadata=KEY, timeout=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: scrape(port, reserved, model=MODEL) == before)
    assert scrape(port, "maas_generate_running_sequences", model=MODEL) == 0


async def test_stream_requests_after_a_backend_went_away_are_answered_by_the_other(
    tmp_path: Path, start_inference_at: StartInferenceAt, start_gateway: StartGateway
) -> None:
    repository = repository_with(tmp_path / "repo", CONFIG)
    first = await start_inference_at(repository, service_token=TOKEN)
    second = await start_inference_at(repository, service_token=TOKEN)
    gateway = await start_gateway(
        backends=f"{backend_address(first)},{backend_address(second)}",
        api_keys="team-a:secret-a",
        backend_token=TOKEN,
    )
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=KEY, timeout=30)
        await until(lambda: all(s.ready for s in gateway.pool.states()))
        await first.shutdown(0)
        # The first stops serving its models (health Watch) and then its port: each
        # request goes to the second, or, sent to the first before the gateway knew,
        # fails before any response and is retried there.
        for i in range(6):
            replies = [
                r
                async for r in stub.ModelStreamInfer(
                    send(generate_request(PROMPT, 2, id=f"r{i}")), metadata=KEY, timeout=60
                )
            ]
            assert replies and not any(r.error_message for r in replies), replies[-1]
            assert replies[-1].infer_response.parameters[FINAL].bool_param is True
    retries = gateway.metrics_registry.get_sample_value("maas_gateway_retries_total") or 0
    print(f"6 stream requests after a backend went away: {retries:g} retried")


async def test_a_backend_that_stops_mid_answer_ends_the_request_with_unavailable(
    tmp_path: Path, start_inference_at: StartInferenceAt, start_gateway: StartGateway
) -> None:
    # A generation's answer cannot be retried once tokens are out: the request ends
    # with an error response that says what happened (the backend stopped, after how
    # many responses) and carries UNAVAILABLE, and the client's stream goes on.
    backend = await start_inference_at(repository_with(tmp_path / "repo", CONFIG))
    gateway = await start_gateway(backends=backend_address(backend))
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=30)
        queue: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.ModelInferRequest]:
            while (request := await queue.get()) is not None:
                yield request

        await queue.put(generate_request(PROMPT, 400, id="long"))
        replies: list[pb.ModelStreamInferResponse] = []
        call = stub.ModelStreamInfer(requests(), timeout=60)
        async for reply in call:
            replies.append(reply)
            if len(replies) == 2:
                await backend.shutdown(0)  # mid-answer: 2 tokens out, hundreds to go
            if reply.error_message or reply.infer_response.parameters[FINAL].bool_param:
                break
        await queue.put(None)
        cut = replies[-1]
        assert cut.error_message.startswith("the inference backend stopped after "), cut
        assert "an answer that has begun is not retried" in cut.error_message
        assert cut.infer_response.parameters["maas_error_status"].string_param == "UNAVAILABLE"
        assert cut.infer_response.id == "long"
        assert len(replies) < 400 and not any(r.error_message for r in replies[:-1])
        async for extra in call:
            raise AssertionError(f"nothing follows the request's last response: {extra}")
