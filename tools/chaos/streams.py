"""Generation streams beside the unary load: tokens that cannot be retried mid-answer.

A generation stream's answer goes out token by token, so a fault that cuts it
cannot be hidden by a retry once a token is out. What must hold instead is that a
cut stream ends with a clear status: an error response carrying its status (the
gateway's `maas_error_status`), or the call ending with a gRPC status that is not
OK. A stream that ends without its final response and without an error, or one
that just stops, is the failure counted here (`SILENT`).

Each client runs one stream at a time, back to back, every one with its own
deadline; every stream is recorded, and a fault's window is cut out afterwards as
the unary load's is, but by when a stream ended: a stream runs for seconds, so one
that started before a fault and was cut by it belongs to that fault's row.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from services.common.streams import ERROR_STATUS_PARAM, FINAL_PARAM
from tools.chaos.load import Clients

COMPLETE = "COMPLETE"
SILENT = "SILENT"  # ended OK without its final response or an error: the goal is 0
STREAM_ERROR = "STREAM_ERROR"  # an error response without a status name
PROMPTS = (
    "Name three primary colours.",
    "Why is the sky blue?",
    "What does a bee make?",
    "Describe a cat in five words.",
)
Stub = pb_grpc.GRPCInferenceServiceStub
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class StreamRecord:
    """One stream: monotonic start and end, outcome, tokens received before it ended."""

    start: float
    end: float
    outcome: str  # COMPLETE, SILENT, or the status it ended with
    tokens: int
    detail: str = ""


@dataclass
class StreamWindow:
    """What happened to the streams that ended in [start, end)."""

    sent: int
    complete: int
    cut: int  # ended with a clear status
    silent: int
    outcomes: dict[str, int]
    cut_after_tokens: int  # of the cut ones, those that had tokens out already
    details: dict[str, int] = field(default_factory=dict)


@dataclass
class StreamOptions:
    """How many stream clients, the model, each stream's length and deadline, the bounds."""

    clients: int = 2
    model: str = "smollm2"
    max_tokens: int = 48
    deadline_s: float = 30.0
    max_seconds: float = 900.0
    max_streams: int = 100_000


def generate_request(model: str, prompt: str, max_tokens: int, id: str) -> pb.ModelInferRequest:
    """A streamed generate request (text_input, sampling_parameters, stream=true)."""
    request = pb.ModelInferRequest(model_name=model, id=id)
    for name, text in (
        ("text_input", CHAT.format(prompt)),
        ("sampling_parameters", f'{{"max_tokens": {max_tokens}}}'),
    ):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
    for name in ("stream", "exclude_input_in_output"):
        tensor = request.inputs.add(name=name, datatype="BOOL", shape=[1])
        tensor.contents.bool_contents.append(True)
    return request


def classify(responses: list[pb.ModelStreamInferResponse]) -> tuple[str, int, str]:
    """(outcome, tokens, detail) of a stream whose call ended OK with `responses`."""
    tokens = 0
    for response in responses:
        if response.error_message:
            param = response.infer_response.parameters.get(ERROR_STATUS_PARAM)
            status = param.string_param if param is not None and param.string_param else ""
            return status or STREAM_ERROR, tokens, response.error_message
        tokens += 1
        final = response.infer_response.parameters.get(FINAL_PARAM)
        if final is not None and final.bool_param:
            return COMPLETE, tokens, ""
    return SILENT, tokens, f"{tokens} responses, none final"


@dataclass
class StreamLoad:
    """Runs the stream clients against `target` until stopped or a bound is reached."""

    target: str
    options: StreamOptions = field(default_factory=StreamOptions)
    records: list[StreamRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        o = self.options
        self._clients = Clients(o.clients, o.max_seconds, o.max_streams)

    def start(self) -> None:
        self._clients.start(self._client)

    async def stop(self) -> None:
        """Stop starting streams and wait for those running."""
        await self._clients.stop()

    async def _client(self, index: int) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            n = 0
            while self._clients.more():
                prompt = PROMPTS[(index + n) % len(PROMPTS)]
                self.records.append(await self._one(stub, prompt, f"c{index}-{n}"))
                n += 1

    async def _one(
        self, stub: pb_grpc.GRPCInferenceServiceStub, prompt: str, id: str
    ) -> StreamRecord:
        o = self.options
        request = generate_request(o.model, prompt, o.max_tokens, id)

        async def one_request() -> AsyncIterator[pb.ModelInferRequest]:
            yield request

        responses: list[pb.ModelStreamInferResponse] = []
        start = time.monotonic()
        call = stub.ModelStreamInfer(one_request(), timeout=o.deadline_s)
        try:
            async for response in call:
                responses.append(response)
                final = response.infer_response.parameters.get(FINAL_PARAM)
                if response.error_message or (final is not None and final.bool_param):
                    break  # this request's answer is whole; the call is ours to end
        except grpc.aio.AioRpcError as exc:
            tokens = sum(1 for r in responses if not r.error_message)
            return StreamRecord(
                start, time.monotonic(), exc.code().name, tokens, exc.details() or ""
            )
        finally:
            call.cancel()
        outcome, tokens, detail = classify(responses)
        return StreamRecord(start, time.monotonic(), outcome, tokens, detail)

    def window(self, start: float, end: float) -> StreamWindow:
        """Streams that ended in [start, end)."""
        chosen = [r for r in self.records if start <= r.end < end]
        outcomes: dict[str, int] = {}
        details: dict[str, int] = {}
        for r in chosen:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            if r.outcome != COMPLETE:
                key = f"{r.outcome}: {r.detail}"[:200]
                details[key] = details.get(key, 0) + 1
        cut = [r for r in chosen if r.outcome not in (COMPLETE, SILENT)]
        return StreamWindow(
            sent=len(chosen),
            complete=outcomes.get(COMPLETE, 0),
            cut=len(cut),
            silent=outcomes.get(SILENT, 0),
            outcomes=outcomes,
            cut_after_tokens=sum(1 for r in cut if r.tokens > 0),
            details=details,
        )
