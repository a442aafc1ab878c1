"""Embedding models (task: embedding) through a real inference server over gRPC: the
demo all-MiniLM-L6-v2 built by tools/demo/minilm.py, texts in, unit vectors out.

Meaning (food near food, far from the stock market), agreement with
sentence-transformers run in-process, requests batched together giving what they
give alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.inference.main import InferenceServer
from services.inference.tasks.embedding import EmbeddingModel
from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.embedding_models import minilm_dir, repository_with
from tools.demo import minilm

FOOD = (
    "I love eating pizza with extra cheese.",
    "Pasta with tomato sauce is my favourite dinner.",
)
STOCKS = "The stock market fell sharply today as investors sold shares."
# Longer than max_length (256) in tokens, so truncation matters.
LONG = " ".join(f"word{i} and more" for i in range(150))
TEXTS = (*FOOD, STOCKS, "hi", "", "Grüße aus Köln, ein Satz mit Umlauten!", LONG)
BATCH = 8
BATCHED = f"""\
task: embedding
embedding:
  max_length: {minilm.MAX_LENGTH}
  max_batch_size: {BATCH}
  # Long enough that the concurrent requests below always meet in one batch; the
  # batch runs as soon as it holds max_batch_size texts.
  max_queue_delay_us: 20000000
warmup: []
"""
ALONE = f"""\
task: embedding
embedding:
  max_length: {minilm.MAX_LENGTH}
  max_batch_size: 1
warmup: []
"""


def request(texts: Sequence[str], shape: Sequence[int] | None = None) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=minilm.NAME)
    tensor = msg.inputs.add(name="text", datatype="BYTES", shape=shape or [len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return msg


async def embed(stub: pb_grpc.GRPCInferenceServiceStub, texts: Sequence[str]) -> np.ndarray:
    reply = await stub.ModelInfer(request(texts))
    output, counts = reply.outputs
    assert (output.name, output.datatype) == ("embedding", "FP32")
    assert (counts.name, counts.datatype) == ("num_input_tokens", "UINT32")
    assert list(counts.shape) == [len(texts)]
    assert list(output.shape) == [len(texts), minilm.DIMENSION]
    return np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(output.shape)


@pytest.fixture(scope="module")
def built() -> Path:
    return minilm_dir()


async def serve(start: StartInferenceAt, root: Path, config: str) -> InferenceServer:
    return await start(repository_with(root, config))


async def test_food_sentences_are_close_and_far_from_the_stock_market(
    built: Path, start_inference_at: StartInferenceAt
) -> None:
    server = await start_inference_at(built.parent)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        vectors = await embed(stub, [*FOOD, STOCKS])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.5, cosine
    assert cosine[0, 2] < 0.2 and cosine[1, 2] < 0.2, cosine


async def test_metadata_and_config_show_the_text_signature(
    built: Path, start_inference_at: StartInferenceAt
) -> None:
    server = await start_inference_at(built.parent)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=minilm.NAME))
        config = (await stub.ModelConfig(pb.ModelConfigRequest(name=minilm.NAME))).config
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("embedding", "FP32", [-1, minilm.DIMENSION]),
        ("num_input_tokens", "UINT32", [-1]),
    ]
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("text", [-1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        ("embedding", [-1, minilm.DIMENSION]),
        ("num_input_tokens", [-1]),
    ]


async def test_texts_as_a_column_give_the_same_vectors(
    built: Path, start_inference_at: StartInferenceAt
) -> None:
    server = await start_inference_at(built.parent)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        flat = await embed(stub, [*FOOD, STOCKS])
        reply = await stub.ModelInfer(request([*FOOD, STOCKS], shape=[3, 1]))
    assert list(reply.outputs[0].shape) == [3, minilm.DIMENSION]
    column = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(3, -1)
    np.testing.assert_allclose(column, flat, atol=1e-6)


async def test_vectors_match_sentence_transformers_in_process(
    built: Path, start_inference_at: StartInferenceAt
) -> None:
    from sentence_transformers import SentenceTransformer

    server = await start_inference_at(built.parent)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        served = await embed(stub, TEXTS)
    reference = SentenceTransformer(str(minilm.source_dir()), device="cpu")
    assert reference.max_seq_length == minilm.MAX_LENGTH  # so LONG is cut alike
    want = reference.encode(list(TEXTS), convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(served, want, atol=1e-5, rtol=0)


async def test_concurrent_requests_batched_equal_each_one_alone(
    built: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    batched = await serve(start_inference_at, tmp_path / "batched", BATCHED)
    alone = await serve(start_inference_at, tmp_path / "alone", ALONE)
    texts = [*TEXTS, "one more, of a length of its own"]
    assert len(texts) == BATCH
    model = batched.manager.resolve(minilm.NAME, "").task
    assert isinstance(model, EmbeddingModel)
    runs = model.batcher.runs
    async with (
        grpc.aio.insecure_channel(f"localhost:{batched.grpc.port}") as ch_batched,
        grpc.aio.insecure_channel(f"localhost:{alone.grpc.port}") as ch_alone,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(ch_batched)
        together = await asyncio.gather(*(embed(stub, [t]) for t in texts))
        # All eight met in one run, padded to the longest text; ModelStatistics says so.
        assert (model.batcher.runs - runs, model.batcher.texts_run) == (1, BATCH)
        reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=minilm.NAME))
        (stats,) = reply.model_stats
        assert (stats.execution_count, stats.inference_count) == (1, BATCH)
        assert [b.batch_size for b in stats.batch_stats] == [BATCH]
        assert stats.inference_stats.success.count == BATCH
        stub_alone = pb_grpc.GRPCInferenceServiceStub(ch_alone)
        single = [await embed(stub_alone, [t]) for t in texts]
    for text, got, want in zip(texts, together, single, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=text[:40])
