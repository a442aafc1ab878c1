"""`maas chat` on the demo chat model, through a real gateway and inference service:
each stdin line is a turn, streamed in pieces, and the conversation so far is sent
with each turn (the answers equal unary ModelInfer on the same messages)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.integration.tools.cli_stack import maas, serving
from tools.bench.textservers import demo_model
from tools.chat import chat, generate_inputs, generate_request, parse_response
from tools.cli import build_parser

MAX_TOKENS = 12
TURNS = ("What is the capital of France?", "And of Italy?")


async def unary(gateway: str, messages: Sequence[dict[str, str]]) -> str:
    """The whole answer to `messages` from ModelInfer (greedy, same max_tokens)."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    inputs = generate_inputs(messages=messages, sampling={"max_tokens": MAX_TOKENS}, stream=False)
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.ModelInfer(generate_request("smollm2", inputs), timeout=120)
    return parse_response(pb.ModelStreamInferResponse(infer_response=reply)).text


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    root.mkdir()
    (root / "smollm2").symlink_to(demo_model("smollm2"), target_is_directory=True)
    return root


async def test_chat_streams_each_turn_with_the_conversation_so_far(
    repository: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(repository) as gateway:
        first = await unary(gateway, [{"role": "user", "content": TURNS[0]}])
        second = await unary(
            gateway,
            [
                {"role": "user", "content": TURNS[0]},
                {"role": "assistant", "content": first},
                {"role": "user", "content": TURNS[1]},
            ],
        )
        # In pieces, as they arrive: more than one write per answer.
        args = build_parser().parse_args(
            ["chat", "smollm2", "--max-tokens", str(MAX_TOKENS), "--url", gateway]
        )
        lines = iter([f"{TURNS[0]}\n", "\n", f"{TURNS[1]}\n", ""])
        writes: list[str] = []
        assert await chat(args, lambda: next(lines), writes.append) == 0
        assert "".join(writes) == f"{first}\n{second}\n"
        assert len(writes) > 4, writes
        # The console script reads stdin the same way.
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{TURNS[0]}\n"))
        code, out, err = await maas(
            capsys, ["chat", "smollm2", "--max-tokens", str(MAX_TOKENS), "--url", gateway]
        )
        assert (code, out) == (0, f"{first}\n"), err
        monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
        code, out, err = await maas(capsys, ["chat", "nope", "--url", gateway])
        assert code == 2 and err.startswith("maas chat: NOT_FOUND: "), err
        code, out, err = await maas(capsys, ["infer", "smollm2", "--text", "hi", "--url", gateway])
    assert code == 2
    assert err.strip() == "maas infer: model 'smollm2' generates text: use maas chat smollm2"
    assert first and second and first != second
