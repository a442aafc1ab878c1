"""POST /v1/embeddings and GET /v1/models through a real gateway and inference server,
over the demo all-MiniLM-L6-v2 (tools/demo/minilm.py) beside the tensor model `pair`.

The vectors must be those the same texts get over the gateway's v2 gRPC path, bit
for bit, in both encodings; usage and the gateway's token counter are the tokens
the model's own tokenizer makes of the texts, without padding; only text models are
listed, and only those the key may use.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tokenizers import Tokenizer

from services.gateway.main import GatewayServer
from tests.integration.conftest import StartInferenceAt
from tests.integration.gateway.conftest import StartGateway, backend_address, output
from tests.integration.inference.embedding_models import minilm_dir
from tools.demo import minilm

KEYS = """
keys:
  - {id: team-a, key: key-a}
  - {id: team-pair, key: key-pair, models: [pair]}
"""
TEXTS = ["I love eating pizza.", "Pasta is my favourite dinner.", "Stocks fell today."]
# Of different lengths, so a count of the padded batch would be too large; the last
# is longer than max_length, so it counts what the model ran.
USAGE_TEXTS = ["hi", *TEXTS, " ".join(f"word{i} and more" for i in range(150))]


@pytest.fixture
async def gateway(
    start_inference_at: StartInferenceAt,
    start_gateway: StartGateway,
    pair_repository: Path,
    tmp_path: Path,
) -> GatewayServer:
    root = tmp_path / "text-repository"
    shutil.copytree(pair_repository, root)
    (root / "minilm").mkdir()
    (root / "minilm" / "1").symlink_to(minilm_dir() / "1", target_is_directory=True)
    shutil.copy(minilm_dir() / "config.yaml", root / "minilm" / "config.yaml")
    backend = await start_inference_at(root)
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


async def call(
    gateway: GatewayServer, method: str, path: str, key: str = "key-a", body: Any = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        url = f"http://localhost:{gateway.http_port}{path}"
        headers = {"authorization": f"Bearer {key}"}
        async with session.request(method, url, headers=headers, json=body) as response:
            return response.status, await response.json()


async def grpc_vectors(gateway: GatewayServer, texts: list[str]) -> np.ndarray:
    request = pb.ModelInferRequest(model_name="minilm")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.ModelInfer(request, metadata=(("authorization", "Bearer key-a"),))
    return output(reply, "embedding")


async def test_models_lists_text_models_the_key_may_use(gateway: GatewayServer) -> None:
    status, body = await call(gateway, "GET", "/v1/models")
    assert status == 200, body
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["minilm"]
    model = body["data"][0]
    assert model["object"] == "model" and model["owned_by"] == "maas"
    assert isinstance(model["created"], int)
    status, one = await call(gateway, "GET", "/v1/models/minilm")
    assert status == 200 and one == model
    status, body = await call(gateway, "GET", "/v1/models", key="key-pair")
    assert status == 200 and body["data"] == []
    status, body = await call(gateway, "GET", "/v1/models/pair")
    assert status == 404 and "not a text model" in body["error"]["message"]


async def test_embeddings_equal_the_v2_path(gateway: GatewayServer) -> None:
    expected = await grpc_vectors(gateway, TEXTS)
    status, body = await call(
        gateway, "POST", "/v1/embeddings", body={"model": "minilm", "input": TEXTS}
    )
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    floats = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert floats.shape == (3, 384)
    assert np.array_equal(floats, expected)
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    food = floats[0] @ floats[1]
    assert food > 0.5 and floats[0] @ floats[2] < food

    status, body = await call(
        gateway,
        "POST",
        "/v1/embeddings",
        body={"model": "minilm", "input": TEXTS[0], "encoding_format": "base64"},
    )
    assert status == 200, body
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    # Alone, not padded beside longer texts: compared with the same request over v2.
    assert np.array_equal(vector, (await grpc_vectors(gateway, TEXTS[:1]))[0])


def expected_tokens(texts: list[str]) -> list[int]:
    """Each text's tokens by the model's tokenizer, unpadded, cut at max_length."""
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(minilm.MAX_LENGTH)
    return [len(e.ids) for e in tokenizer.encode_batch(texts)]


def prompt_tokens_counted(gateway: GatewayServer) -> float:
    labels = {"key": "team-a", "model": "minilm", "kind": "prompt"}
    value = gateway.metrics_registry.get_sample_value("maas_gateway_tokens_total", labels)
    return value or 0.0


async def test_embeddings_usage_is_the_tokenizers_count(gateway: GatewayServer) -> None:
    each = expected_tokens(USAGE_TEXTS)
    assert len(set(each)) == len(each) and each[-1] == minilm.MAX_LENGTH
    before = prompt_tokens_counted(gateway)
    status, body = await call(
        gateway, "POST", "/v1/embeddings", body={"model": "minilm", "input": USAGE_TEXTS}
    )
    assert status == 200, body
    assert body["usage"] == {"prompt_tokens": sum(each), "total_tokens": sum(each)}
    assert prompt_tokens_counted(gateway) - before == sum(each)

    status, body = await call(
        gateway, "POST", "/v1/embeddings", body={"model": "minilm", "input": USAGE_TEXTS[1]}
    )
    assert status == 200, body
    assert body["usage"] == {"prompt_tokens": each[1], "total_tokens": each[1]}
    assert prompt_tokens_counted(gateway) - before == sum(each) + each[1]


async def test_embeddings_refusals(gateway: GatewayServer) -> None:
    status, body = await call(
        gateway, "POST", "/v1/embeddings", key="key-pair", body={"model": "minilm", "input": "x"}
    )
    assert status == 403 and body["error"]["type"] == "permission_error"
    status, body = await call(
        gateway, "POST", "/v1/embeddings", body={"model": "minilm", "input": "x", "dimensions": 8}
    )
    assert status == 400 and body["error"]["param"] == "dimensions"
    assert "expected 384" in body["error"]["message"]
    status, body = await call(
        gateway,
        "POST",
        "/v1/chat/completions",
        body={"model": "minilm", "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 400 and "embedding model" in body["error"]["message"]
