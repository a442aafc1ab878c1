"""The /v1 routes' refusals through a real gateway and inference server (issue C).

Errors have OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with
the status the one mapping gives: 400 naming the field (expected against got),
401, 403, 404 for an unknown model, 429 with Retry-After, and 400 for a model
that is not a text model (`pair` here, a tensor model), which /v1/models leaves out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import StartGateway, StartInference, backend_address

KEYS = """
keys:
  - {id: team-a, key: key-a}
  - {id: team-other, key: key-other, models: [other]}
  - {id: meta-only, key: key-meta, scopes: [metadata]}
  - {id: slow, key: key-slow, rate_per_second: 0.001, burst: 1}
"""
CHAT = {"model": "pair", "messages": [{"role": "user", "content": "hi"}]}


async def call(
    gateway: GatewayServer, method: str, path: str, key: str | None = "key-a", body: Any = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session:
        url = f"http://localhost:{gateway.http_port}{path}"
        kwargs: dict[str, Any] = {"headers": headers}
        if isinstance(body, bytes):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, url, **kwargs) as response:
            return response.status, dict(response.headers), await response.json()


@pytest.fixture
async def gateway(
    start_inference: StartInference, start_gateway: StartGateway, tmp_path: Path
) -> GatewayServer:
    backend = await start_inference()
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


def _error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


async def test_tensor_models_are_not_listed(gateway: GatewayServer) -> None:
    status, _, body = await call(gateway, "GET", "/v1/models")
    assert status == 200
    assert body == {"object": "list", "data": []}


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "words"),
    [
        ("/v1/chat/completions", CHAT, 400, "model", "expected a generative model"),
        ("/v1/embeddings", {"model": "pair", "input": "x"}, 400, "model", "expected an embedding"),
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, None, "unknown model 'nope'"),
        ("/v1/chat/completions", CHAT | {"n": 2}, 400, "n", "expected 1"),
        ("/v1/chat/completions", CHAT | {"max_tokens": "5"}, 400, "max_tokens", 'got "5"'),
        ("/v1/chat/completions", {"model": "pair"}, 400, "messages", "expected a value"),
        ("/v1/embeddings", {"model": "pair", "input": [1]}, 400, "input", "array of strings"),
        ("/v1/completions", b"{not json", 400, None, "malformed JSON"),
        ("/v1/completions", {"model": "a/b", "prompt": "x"}, 400, None, "model name"),
    ],
)
async def test_bad_requests_name_the_field(
    gateway: GatewayServer, path: str, body: Any, status: int, param: str | None, words: str
) -> None:
    got, _, answer = await call(gateway, "POST", path, body=body)
    error = _error(answer)
    assert got == status, error
    assert error["param"] == param
    assert words in error["message"]
    assert "Traceback" not in error["message"] and "/" not in error["message"].replace("a/b", "")


async def test_auth_and_limits(gateway: GatewayServer) -> None:
    status, headers, body = await call(gateway, "GET", "/v1/models", key=None)
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    assert _error(body)["type"] == "authentication_error"
    status, _, body = await call(gateway, "GET", "/v1/models", key="wrong")
    assert status == 401 and _error(body)["code"] == "invalid_api_key"
    status, _, body = await call(gateway, "POST", "/v1/chat/completions", "key-other", CHAT)
    assert status == 403 and _error(body)["type"] == "permission_error"
    status, _, body = await call(gateway, "GET", "/v1/models", key="key-meta")
    assert status == 403 and "scope" in _error(body)["message"]
    assert (await call(gateway, "GET", "/v1/models", key="key-slow"))[0] == 200
    status, headers, body = await call(gateway, "GET", "/v1/models", key="key-slow")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert _error(body)["type"] == "rate_limit_error"


async def test_unknown_routes_answer_in_openai_shape(gateway: GatewayServer) -> None:
    status, _, body = await call(gateway, "GET", "/v1/nothing-here")
    assert status == 404 and _error(body)
    status, _, body = await call(gateway, "GET", "/v1/embeddings")
    assert status == 405 and _error(body)


async def test_the_prefix_is_configurable(
    start_inference: StartInference, start_gateway: StartGateway
) -> None:
    backend = await start_inference()
    gateway = await start_gateway(
        backends=backend_address(backend), http_openai_prefix="/openai/v1"
    )
    status, _, body = await call(gateway, "GET", "/openai/v1/models", key=None)
    assert status == 200 and body == {"object": "list", "data": []}
    status, _, body = await call(gateway, "GET", "/v1/models", key=None)
    assert status == 404 and "error" in body
    _, _, document = await call(gateway, "GET", "/openapi.json", key=None)
    assert "/openai/v1/chat/completions" in document["paths"]
    assert "/v1/chat/completions" not in document["paths"]
