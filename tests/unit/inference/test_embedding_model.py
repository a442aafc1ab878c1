"""The embedding backend in-process on the demo minilm: shapes it takes, a request
larger than max_batch_size run in chunks, the truncate parameter, load failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from services.common.errors import InvalidArgument
from services.inference.config import EmbeddingConfig, ModelConfig
from services.inference.runtime import LoadError
from services.inference.tasks import RequestContext
from services.inference.tasks.embedding import EmbeddingModel, open_embedding, truncate_parameter
from tests.integration.inference.embedding_models import minilm_dir
from tools.demo import minilm

TEXTS = ["a short one", "", "a text that is somewhat longer than the others here", "x y z", "ok"]


def strings(texts: list[str], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array.reshape(shape)


@pytest.fixture(scope="module")
def version() -> Path:
    return minilm_dir() / "1"


@pytest.fixture
async def model(version: Path) -> AsyncIterator[EmbeddingModel]:
    config = ModelConfig(task="embedding", embedding=EmbeddingConfig(max_batch_size=2))
    loaded = open_embedding(version, config)
    assert isinstance(loaded, EmbeddingModel)
    loaded.start()
    yield loaded
    await loaded.close()


def test_truncate_is_a_bool_that_defaults_to_true() -> None:
    assert truncate_parameter({}) is True
    assert truncate_parameter({"truncate": False}) is False
    with pytest.raises(InvalidArgument, match="parameter 'truncate': got int 1, expected a bool"):
        truncate_parameter({"truncate": 1})


async def test_texts_n_and_n_by_1_give_n_vectors_in_chunks_equal_to_each_alone(
    model: EmbeddingModel,
) -> None:
    context = RequestContext()
    # Five texts with max_batch_size 2: one batch, run on the session as 2 + 2 + 1.
    flat, _ = await model.submit({"text": strings(TEXTS, (5,))}, None, context)
    column, _ = await model.submit({"text": strings(TEXTS, (5, 1))}, None, context)
    assert flat["embedding"].shape == (5, minilm.DIMENSION)
    np.testing.assert_allclose(column["embedding"], flat["embedding"], atol=1e-6)
    for i, text in enumerate(TEXTS):
        alone, _ = await model.submit({"text": strings([text], (1,))}, None, context)
        np.testing.assert_allclose(alone["embedding"][0], flat["embedding"][i], atol=1e-5)
    empty, queued = await model.submit({"text": strings([], (0,))}, None, context)
    assert empty["embedding"].shape == (0, minilm.DIMENSION) and queued == 0
    assert empty["num_input_tokens"].shape == (0,)
    # The texts merged and run 2 + 2 + 1 still get their own, unpadded counts.
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "1" / "tokenizer.json"))
    tokenizer.no_padding()
    expected = [len(e.ids) for e in tokenizer.encode_batch(TEXTS)]
    assert flat["num_input_tokens"].dtype == np.uint32
    assert flat["num_input_tokens"].tolist() == expected
    assert column["num_input_tokens"].tolist() == expected


def test_signature_and_provider(version: Path) -> None:
    loaded = open_embedding(version, ModelConfig(task="embedding"))
    (text,), (embedding, tokens) = loaded.signature.inputs, loaded.signature.outputs
    assert (text.name, text.datatype.name, text.shape) == ("text", "BYTES", (-1,))
    assert (embedding.name, embedding.datatype.name, embedding.shape) == (
        "embedding",
        "FP32",
        (-1, minilm.DIMENSION),
    )
    assert (tokens.name, tokens.datatype.name, tokens.shape) == (
        "num_input_tokens",
        "UINT32",
        (-1,),
    )
    assert loaded.signature.batchable
    assert loaded.provider == "CPUExecutionProvider" and loaded.decoupled is False


def test_an_unreadable_tokenizer_is_a_load_error(version: Path, tmp_path: Path) -> None:
    broken = tmp_path / "1"
    broken.mkdir()
    (broken / "model.onnx").symlink_to(version / "model.onnx")
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(LoadError, match="tokenizer.json could not be read"):
        open_embedding(broken, ModelConfig(task="embedding"))
