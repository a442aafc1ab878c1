"""`maas chat MODEL`: talk to a generative model, its tokens printed as they arrive.

Each line read from stdin (typed at the prompt, or piped) is one user turn. The
whole conversation so far goes to the model as `messages` (a JSON list of
{role, content}), over the gateway's ModelStreamInfer, the way Triton's vLLM
backend is called: one stream per turn, one response per token or token group,
the last one marked with the `triton_final_response` parameter. `/reset` starts a
new conversation; end of input (Ctrl-D) or Ctrl-C ends the session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from tools.cli import CliError


@dataclass(frozen=True)
class Piece:
    """One streamed response of a generation."""

    text: str
    final: bool
    output_tokens: int | None = None  # num_output_tokens, when the response has it
    finish_reason: str = ""


def generate_inputs(
    *,
    messages: Sequence[Mapping[str, str]] | None = None,
    prompt: str | None = None,
    sampling: Mapping[str, Any] | None = None,
    stream: bool = True,
    count_tokens: bool = True,
) -> dict[str, np.ndarray]:
    """The v2 inputs of a `task: generate` request, named as Triton's vLLM backend
    names them: `messages` (JSON) or `text_input`, asking for the completion only."""
    inputs: dict[str, np.ndarray] = {}
    if messages is not None:
        inputs["messages"] = _bytes(json.dumps(list(messages)))
    else:
        inputs["text_input"] = _bytes(prompt or "")
    inputs["stream"] = np.array([stream])
    inputs["exclude_input_in_output"] = np.array([True])
    if sampling:
        inputs["sampling_parameters"] = _bytes(json.dumps(dict(sampling)))
    if count_tokens:
        for name in ("input_tokens", "output_tokens", "finish_reason"):
            flag = f"return_num_{name}" if name != "finish_reason" else "return_finish_reason"
            inputs[flag] = np.array([True])
    return inputs


def generate_request(
    model: str, inputs: Mapping[str, np.ndarray], version: str = "", request_id: str = ""
) -> Any:
    """A ModelInferRequest carrying `inputs` as raw contents."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    from tools.infer import add_input

    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, array in inputs.items():
        add_input(request, name, array)
    return request


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype=object)


def parse_response(response: Any) -> Piece:
    """A Piece from one ModelStreamInferResponse; CliError for an error message."""
    from services.common.errors import error_from_status
    from services.common.streams import ERROR_STATUS_PARAM
    from services.common.tensors import decode

    reply = response.infer_response
    if response.error_message:
        # An error inside the stream: its status rides in a parameter (UNKNOWN without).
        param = reply.parameters.get(ERROR_STATUS_PARAM)
        error = error_from_status(
            param.string_param if param is not None else "UNKNOWN", response.error_message
        )
        raise CliError(f"{error.status}: {error.message}")
    flag = reply.parameters.get("triton_final_response")
    values: dict[str, np.ndarray] = {}
    for i, out in enumerate(reply.outputs):
        raw = reply.raw_output_contents[i] if reply.raw_output_contents else None
        values[out.name] = decode(out, raw)
    return piece_from(values, bool(flag.bool_param) if flag is not None else False)


def piece_from(outputs: Mapping[str, np.ndarray], final: bool) -> Piece:
    """A Piece from a response's decoded outputs (served or in-process alike)."""
    text = b"".join(_as_bytes(x) for x in outputs.get("text_output", np.array([])).ravel())
    tokens = outputs.get("num_output_tokens")
    reason = outputs.get("finish_reason")
    return Piece(
        text.decode(errors="replace"),
        final,
        int(tokens.ravel()[0]) if tokens is not None and tokens.size else None,
        _as_bytes(reason.ravel()[0]).decode(errors="replace")
        if reason is not None and reason.size
        else "",
    )


def _as_bytes(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


async def stream_generate(
    stub: Any, request: Any, metadata: Sequence[tuple[str, str]], timeout: float | None
) -> AsyncIterator[Piece]:
    """The pieces of one streamed generation, up to and including the final one."""
    call = stub.ModelStreamInfer(metadata=metadata, timeout=timeout)
    try:
        await call.write(request)
        async for response in call:
            piece = parse_response(response)
            yield piece
            if piece.final:
                # Half-close and wait for the status, so the server ends the call
                # cleanly rather than seeing it cancelled.
                await call.done_writing()
                await asyncio.wait_for(call.code(), 10)
                return
        raise CliError("the stream ended before its final response")
    finally:
        # A consumer that stops early (Ctrl-C) cancels, which stops the generation.
        call.cancel()


async def chat(
    args: argparse.Namespace,
    read_line: Callable[[], str],
    write: Callable[[str], None],
) -> int:
    """The session: read a turn, stream the answer, keep the conversation."""
    from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    from services.common.errors import error_from_rpc
    from tools.infer import auth_metadata, gateway_channel

    metadata = auth_metadata(args.key)
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    sampling = sampling_parameters(args)
    async with gateway_channel(args) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            line = await asyncio.to_thread(read_line)
            if not line:
                return 0  # end of input
            line = line.strip()
            if line == "/reset":
                del history[1 if args.system else 0 :]
                continue
            if not line:
                continue
            history.append({"role": "user", "content": line})
            inputs = generate_inputs(messages=history, sampling=sampling)
            request = generate_request(args.model, inputs, args.version)
            parts: list[str] = []
            try:
                async for piece in stream_generate(stub, request, metadata, args.timeout):
                    parts.append(piece.text)
                    write(piece.text)
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                raise CliError(f"{error.status}: {error.message}") from None
            write("\n")
            history.append({"role": "assistant", "content": "".join(parts)})


def sampling_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling_parameters JSON from the flags given (greedy when none)."""
    values = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    return {k: v for k, v in values.items() if v is not None}


def _reader(interactive: bool) -> Callable[[], str]:
    def read_line() -> str:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        return sys.stdin.readline()

    return read_line


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """`maas chat`."""
    return asyncio.run(chat(args, _reader(sys.stdin.isatty()), _write))


def register(subparsers: Any) -> None:
    """Add `maas chat`."""
    from tools.infer import add_connection_arguments

    parser = subparsers.add_parser(
        "chat",
        help="chat with a generative model, streamed through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model")
    parser.add_argument("--system", help="a system message to start the conversation")
    parser.add_argument("--max-tokens", type=int, default=256, help="per answer")
    parser.add_argument("--temperature", type=float, help="default: greedy")
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, help="for reproducible sampling")
    add_connection_arguments(parser)
    parser.set_defaults(func=run, timeout=300.0)
