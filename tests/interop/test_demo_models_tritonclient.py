"""tritonclient, unchanged, through the gateway on the real pretrained demo models (issue D).

Servers are subprocesses: an inference service over the demo minilm (embeddings) and
efficientnet (ImageNet classifier), both built from their PyPI packages by tools/demo,
and a gateway with an API key in front. The embedding test is the issue's: the two
sentences about food are close, the one about the stock market is far from both; the
classifier labels scikit-image's `chelsea` photo as a cat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th

from tests.demo_models import demo_repository
from tests.interop.clients import HEADERS, KEY
from tests.servers import ServiceProcess, hashed_key, keyed_gateway
from tools.demo import efficientnet, minilm

SENTENCES = [
    "I love eating pizza with extra cheese.",
    "Pasta with tomato sauce is my favourite dinner.",
    "The stock market fell sharply today as investors sold shares.",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("demo")
    repository = demo_repository(minilm.NAME, efficientnet.NAME)
    with keyed_gateway(workdir, repository, "keys:\n" + hashed_key("demo", KEY)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gateway: ServiceProcess) -> Iterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(gateway.address)
    deadline = time.monotonic() + 120
    while not all(c.is_model_ready(m, headers=HEADERS) for m in ("minilm", "efficientnet")):
        assert time.monotonic() < deadline, gateway.logs()
        time.sleep(0.2)
    yield c
    c.close()


def test_tritonclient_embeds_three_sentences(client: tc.InferenceServerClient) -> None:
    text = tc.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
    result = client.infer("minilm", [text], headers=HEADERS)
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    food, food2, stocks = vectors
    assert float(food @ food2) > 0.5
    assert float(food @ stocks) < 0.2 and float(food2 @ stocks) < 0.2


def test_tritonclient_labels_chelsea_as_a_cat(client: tc.InferenceServerClient) -> None:
    image = efficientnet.chelsea()[None]
    tensor = tc.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    probabilities = client.infer("efficientnet", [tensor], headers=HEADERS).as_numpy(
        "probabilities"
    )
    top5 = np.argsort(probabilities[0])[::-1][:5]
    assert int(top5[0]) == efficientnet.CHELSEA_CLASS
    assert "cat" in efficientnet.labels()[int(top5[0])].lower()
    assert abs(float(probabilities[0].sum()) - 1.0) < 1e-4


def test_tritonclient_http_labels_chelsea_as_a_cat(gateway: ServiceProcess) -> None:
    image = efficientnet.chelsea()[None]
    tensor = th.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image, binary_data=True)
    with th.InferenceServerClient(f"127.0.0.1:{gateway.http_port}") as c:
        # tritonclient.http writes its own headers into the dict it is given: pass a copy.
        probabilities = c.infer("efficientnet", [tensor], headers=dict(HEADERS)).as_numpy(
            "probabilities"
        )
    assert int(np.argmax(probabilities[0])) == efficientnet.CHELSEA_CLASS
