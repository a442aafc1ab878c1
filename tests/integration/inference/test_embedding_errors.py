"""Embedding models refuse what they cannot serve with a clear status, through a real
inference server over gRPC: bad texts and tensors are INVALID_ARGUMENT naming expected
and got, and a version without a tokenizer or with another graph fails to load with
its reason while the others serve."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.integration.conftest import StartInferenceAt
from tests.integration.inference.embedding_models import minilm_dir
from tools.demo import minilm

CONFIG = "task: embedding\nwarmup: []\n"


@pytest.fixture(scope="module")
def built() -> Path:
    return minilm_dir()


async def refused(stub: pb_grpc.GRPCInferenceServiceStub, msg: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(msg)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details() or ""


def texts_request(items: list[bytes], shape: list[int] | None = None) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=minilm.NAME)
    tensor = msg.inputs.add(name="text", datatype="BYTES", shape=shape or [len(items)])
    tensor.contents.bytes_contents.extend(items)
    return msg


async def test_bad_texts_and_tensors_are_invalid_argument(
    built: Path, start_inference_at: StartInferenceAt
) -> None:
    server = await start_inference_at(built.parent)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        message = await refused(stub, texts_request([b"fine", b"ok", b"\xff\xfe bad"]))
        assert "input 'text': BYTES element 2 is not UTF-8" in message, message

        floats = pb.ModelInferRequest(model_name=minilm.NAME)
        floats.inputs.add(name="text", datatype="FP32", shape=[2])
        floats.raw_input_contents.append(np.zeros(2, np.float32).tobytes())
        message = await refused(stub, floats)
        assert "input 'text': datatype FP32, expected BYTES" in message, message

        message = await refused(stub, texts_request([b"a", b"b", b"c", b"d"], shape=[2, 2]))
        assert "input 'text': shape [2, 2], expected [-1] or [-1, 1]" in message, message

        wrong_name = pb.ModelInferRequest(model_name=minilm.NAME)
        wrong_name.inputs.add(
            name="input_ids", datatype="INT64", shape=[1]
        ).contents.int64_contents.append(1)
        message = await refused(stub, wrong_name)
        assert "unknown input 'input_ids', expected inputs ['text']" in message, message

        # Nothing to embed is an empty answer, not an error.
        reply = await stub.ModelInfer(texts_request([]))
        assert list(reply.outputs[0].shape) == [0, minilm.DIMENSION]
        # The server still serves after all that.
        reply = await stub.ModelInfer(texts_request([b"still here"]))
        assert list(reply.outputs[0].shape) == [1, minilm.DIMENSION]


async def test_versions_without_a_tokenizer_or_with_another_graph_fail_to_load(
    built: Path, test_models: Path, start_inference_at: StartInferenceAt, tmp_path: Path
) -> None:
    root = tmp_path / "repository"
    shutil.copytree(built, root / minilm.NAME, symlinks=True)
    no_tokenizer = root / "no_tokenizer" / "1"
    no_tokenizer.mkdir(parents=True)
    (no_tokenizer / "model.onnx").symlink_to(built / "1" / "model.onnx")
    (no_tokenizer.parent / "config.yaml").write_text(CONFIG)
    other_graph = root / "other_graph" / "1"
    other_graph.mkdir(parents=True)
    (other_graph / "model.onnx").symlink_to(test_models / "pair" / "1" / "model.onnx")
    (other_graph / "tokenizer.json").symlink_to(built / "1" / "tokenizer.json")
    (other_graph.parent / "config.yaml").write_text(CONFIG)
    server = await start_inference_at(root)
    async with grpc.aio.insecure_channel(f"localhost:{server.grpc.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        rows = {m.name: m for m in index.models}
        assert rows[minilm.NAME].state == "READY"
        assert rows["no_tokenizer"].state == "UNAVAILABLE"
        assert "tokenizer.json is missing" in rows["no_tokenizer"].reason
        assert rows["other_graph"].state == "UNAVAILABLE"
        reason = rows["other_graph"].reason
        assert "model.onnx has inputs ['a', 'b'], outputs ['diff', 'sum']" in reason, reason
        assert "expected inputs input_ids, attention_mask" in reason, reason
        assert str(tmp_path) not in reason and str(built) not in reason
