"""tritonclient.http, unchanged, against the gateway's v2 REST port: health, metadata,
config, statistics and the repository index (servers are subprocesses; issue C)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.interop.clients import HEADERS
from tests.servers import ServiceProcess


@pytest.fixture
def client(gateway: ServiceProcess) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(f"localhost:{gateway.http_port}")
    deadline = time.monotonic() + 30
    while not c.is_server_ready(headers=HEADERS):
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.1)
    yield c
    c.close()


def test_health_and_server_metadata(client: th.InferenceServerClient) -> None:
    assert client.is_server_live(headers=HEADERS)
    assert client.is_server_ready(headers=HEADERS)
    meta = client.get_server_metadata(headers=HEADERS)
    assert meta["name"] == "maas" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_config_and_readiness(client: th.InferenceServerClient) -> None:
    assert client.is_model_ready("pair", headers=HEADERS)
    assert client.is_model_ready("pair", "1", headers=HEADERS)
    assert not client.is_model_ready("no-such-model", headers=HEADERS)
    model = client.get_model_metadata("pair", headers=HEADERS)
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("a", "FP32", [-1, 4]),
        ("b", "FP32", [-1, 4]),
    ]
    assert client.get_model_metadata("pair", "1", headers=HEADERS)["name"] == "pair"
    config = client.get_model_config("cnn", headers=HEADERS)
    assert config["name"] == "cnn" and config["input"]


def test_statistics_and_repository_index(client: th.InferenceServerClient) -> None:
    stats = client.get_inference_statistics("pair", headers=HEADERS)
    assert {s["name"] for s in stats["model_stats"]} == {"pair"}
    every = client.get_inference_statistics(headers=HEADERS)
    assert {"pair", "cnn"} <= {s["name"] for s in every["model_stats"]}
    index = client.get_model_repository_index(headers=HEADERS)
    assert {"pair", "cnn"} <= {row["name"] for row in index}
    assert all(row["state"] for row in index)


def test_errors_reach_tritonclient(client: th.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model", headers=HEADERS)
    assert caught.value.status() == "404" and "no-such-model" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("pair")
    assert caught.value.status() == "401"
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("pair", headers=HEADERS)
    assert caught.value.status() == "501"
