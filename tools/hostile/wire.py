"""Calls with raw bytes: no serializer stands between a hostile message and the server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from maas_proto.inference import grpc_predict_v2_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
SERVICE = "/inference.GRPCInferenceService/"
# Hostile messages reach tens of megabytes; the client must not be the one to refuse them.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_metadata_size", 4 << 20),
]
Metadata = Sequence[tuple[str, str]]


@dataclass
class Outcome:
    """What a client saw: the status code's name, its message, and the reply's bytes."""

    code: str
    message: str = ""
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


async def unary(
    chan: grpc.aio.Channel,
    method: str,
    payload: bytes,
    metadata: Metadata = (),
    timeout: float = 30.0,
) -> Outcome:
    """One unary call with `payload` sent as it is."""
    call = chan.unary_unary(method if method.startswith("/") else SERVICE + method)
    try:
        body = await call(payload, metadata=tuple(metadata), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code().name, exc.details() or "")
    return Outcome("OK", "", body)


async def stream(
    chan: grpc.aio.Channel,
    payloads: Sequence[bytes],
    metadata: Metadata = (),
    timeout: float = 30.0,
) -> tuple[Outcome, list[Outcome]]:
    """ModelStreamInfer with raw messages: the stream's end, and one outcome per reply."""
    call = chan.stream_stream(STREAM)(metadata=tuple(metadata), timeout=timeout)
    replies: list[Outcome] = []

    async def send() -> None:
        for payload in payloads:
            await call.write(payload)
        await call.done_writing()

    sender = asyncio.ensure_future(send())
    try:
        async for raw in call:
            reply = pb.ModelStreamInferResponse.FromString(raw)
            if reply.error_message:
                replies.append(Outcome("STREAM_ERROR", reply.error_message))
            else:
                replies.append(Outcome("OK"))
        end = Outcome((await call.code()).name, await call.details() or "")
    except grpc.aio.AioRpcError as exc:
        end = Outcome(exc.code().name, exc.details() or "")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return end, replies
