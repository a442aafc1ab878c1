"""The demo builders (tools/demo/): each output loads in ONNX Runtime and answers right.

Builds are shared through tests/demo_models.py (.data/demo-models/, built once; a
current build is skipped), so only the first run of the suite pays for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from services.inference.config import load_config
from tests.demo_models import demo_model_dir, demo_repository
from tools.demo import efficientnet, minilm, smollm2
from tools.demo.images import preprocess
from tools.demo.stamp import STAMP_FILE

# A first build of smollm2 takes about a minute on 2 busy cores.
pytestmark = pytest.mark.timeout(600)
FOOD = ("I love eating pizza with extra cheese.", "Pasta with tomato sauce is my favourite dinner.")
MARKET = "The stock market fell sharply today as investors sold shares."


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_minilm_embeds_unit_vectors_that_know_food_from_markets() -> None:
    model_dir = demo_model_dir(minilm.NAME)
    config = load_config(model_dir / "config.yaml")
    assert (config.task, config.embedding.max_length, config.warmup) == ("embedding", 256, ())
    version = model_dir / "1"
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in version.iterdir()}
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch([*FOOD, MARKET])
    session = _session(version / "model.onnx")
    (vectors,) = session.run(
        ["embedding"],
        {
            "input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
        },
    )
    assert vectors.shape == (3, minilm.DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.5, cosine
    assert cosine[0, 2] < 0.2 and cosine[1, 2] < 0.2, cosine
    # Padding must not change a sentence's vector: the short one alone vs padded above.
    alone = tokenizer.encode(FOOD[0])
    (single,) = session.run(
        ["embedding"],
        {
            "input_ids": np.array([alone.ids], np.int64),
            "attention_mask": np.array([alone.attention_mask], np.int64),
        },
    )
    np.testing.assert_allclose(single[0], vectors[0], atol=1e-5)


def test_efficientnet_labels_chelsea_an_egyptian_cat() -> None:
    import skimage.data

    model_dir = demo_model_dir(efficientnet.NAME)
    assert load_config(model_dir / "config.yaml").task == "tensor"
    labels = (model_dir / "1" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[285] == "Egyptian cat"
    session = _session(model_dir / "1" / "model.onnx")
    (image,) = session.get_inputs()
    assert (image.name, image.type, image.shape) == (
        "image",
        "tensor(uint8)",
        ["batch", 224, 224, 3],
    )
    pictures = np.stack([preprocess(skimage.data.chelsea()), preprocess(skimage.data.coffee())])
    (probabilities,) = session.run(["probabilities"], {"image": pictures})
    assert probabilities.shape == (2, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [int(i) for i in probabilities.argmax(axis=1)] == [285, 967]  # cat, espresso


def test_smollm2_answers_greedily_with_last_position_logits() -> None:
    model_dir = demo_model_dir(smollm2.NAME)
    config = load_config(model_dir / "config.yaml")
    assert config.task == "generate"
    assert (config.generate.max_sequences, config.generate.max_context) == (16, 2048)
    version = model_dir / "1"
    assert set(smollm2.VERSION_FILES) <= {p.name for p in version.iterdir()}
    session = _session(version / "model.onnx")
    logits = next(o for o in session.get_outputs() if o.name == "logits")
    assert logits.shape[1:] == [1, 49152]
    answer = smollm2.greedy(version / "model.onnx", version / "tokenizer.json")
    assert answer.strip(), "the greedy answer is empty"
    assert "Paris" in answer


def test_a_current_build_is_left_alone() -> None:
    model_dir = demo_model_dir(efficientnet.NAME)
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    efficientnet.build(model_dir)
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before
    assert (model_dir / STAMP_FILE).is_file()


def test_repository_serves_the_built_versions() -> None:
    root = demo_repository(minilm.NAME, efficientnet.NAME)
    assert sorted(p.name for p in root.iterdir()) == [efficientnet.NAME, minilm.NAME]
    for name in (minilm.NAME, efficientnet.NAME):
        assert (root / name / "1").resolve() == (demo_model_dir(name) / "1").resolve()
        assert (root / name / "1" / "model.onnx").is_file()
        assert load_config(root / name / "config.yaml").task in ("embedding", "tensor")
    assert demo_repository(efficientnet.NAME, minilm.NAME) == root
