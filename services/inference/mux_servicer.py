"""The maas.internal.v1 Forward servicer: the gateway's calls, many to a stream.

Each request frame runs as its own task through the same code as the unary
ModelInfer (InferenceServicer._infer: decode, app.infer, encode), so validation,
batching, statistics, app metrics and errors are those of a unary call. What a
unary call gets from grpc and the interceptors is done here per frame: the
request is decoded by the same Decoder (undecodable -> the same INVALID_ARGUMENT),
the deadline the frame carries ends the work as grpc's would, a ServiceError
becomes its status and message, anything else INTERNAL with the fixed message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from maas_proto.internal.v1 import forward_pb2 as fw
from maas_proto.internal.v1 import forward_pb2_grpc as fw_grpc
from opentelemetry import propagate, trace

from services.common.caller import key_id_of
from services.common.decoding import Decoder
from services.common.errors import ResourceExhausted, ServiceError, Unavailable, Unimplemented
from services.common.interceptor import INTERNAL_MESSAGE, UNDECODABLE_LOG_SECONDS
from services.common.ratelog import Throttled
from services.common.server import ServiceBinding
from services.inference.received import received
from services.inference.servicer import InferenceServicer, routed

_log = logging.getLogger(__name__)
SERVICE_NAME = fw.DESCRIPTOR.services_by_name["Forward"].full_name
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Calls of one stream that may run at once; reading pauses beyond it (backpressure).
# The gateway keeps to the same bound, so it never waits here in practice.
STREAM_WINDOW = 256
DRAINING = "the server is draining"
SPAN_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": "inference.GRPCInferenceService",
    "rpc.method": "ModelInfer",
}
# The reply bytes one stream message carries, about (a single reply may be larger).
BATCH_BYTES = 4 << 20
# What a frame and its message add around a reply, at most (call id, status).
FRAME_OVERHEAD = 1024
# What grpc itself says when a unary call's deadline passes.
DEADLINE_MESSAGE = "Deadline Exceeded"


class ForwardServicer(fw_grpc.ForwardServicer):
    """Runs each request frame of a Calls stream as a unary ModelInfer would run."""

    def __init__(
        self,
        inference: InferenceServicer,
        window: int = STREAM_WINDOW,
        max_message_bytes: int | None = None,
    ) -> None:
        self.inference = inference
        self.window = window
        # A reply larger than the server may send fails its call alone, as a unary
        # call's would, rather than the stream and every call on it.
        self.max_reply_bytes = max_message_bytes
        self.batch_bytes = BATCH_BYTES
        if max_message_bytes is not None:
            self.max_reply_bytes = max_message_bytes - FRAME_OVERHEAD
            self.batch_bytes = min(BATCH_BYTES, max_message_bytes // 2)
        self.decode = Decoder(received, INFER_METHOD, Throttled(_log, UNDECODABLE_LOG_SECONDS))
        self.draining = asyncio.Event()
        # The peer address of each open stream, and the calls running on all of them:
        # what a test or a debugger asks of the multiplexing.
        self.peers: list[str] = []
        self.open_calls = 0

    def drain(self) -> None:
        """Refuse new calls (UNAVAILABLE, so the gateway goes elsewhere) and end each
        stream once its calls are answered, so the server can stop."""
        self.draining.set()

    async def Calls(  # noqa: N802 - the RPC name of the proto
        self, request_iterator: AsyncIterator[fw.Frames], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fw.Frames]:
        if self.draining.is_set():
            raise Unavailable(DRAINING)
        stream = _Stream(self)
        reader = asyncio.ensure_future(stream.read(request_iterator))
        ender = asyncio.ensure_future(stream.end_on_drain())
        peer = context.peer()
        self.peers.append(peer)
        try:
            ended = False
            carry: fw.Frame | None = None
            limit = self.batch_bytes
            while not ended:
                # Every reply ready now goes in one message (one write for many calls),
                # up to `limit` bytes of them; a larger reply goes alone.
                item = carry if carry is not None else await stream.replies.get()
                frames: list[fw.Frame] = []
                carry, size = None, 0
                while item is not None:
                    if frames and size + len(item.payload) > limit:
                        carry = item
                        break
                    frames.append(item)
                    size += len(item.payload)
                    if stream.replies.empty():
                        break
                    item = stream.replies.get_nowait()
                else:
                    ended = True
                if frames:
                    yield fw.Frames(frames=frames)
            if stream.error is not None:
                raise stream.error
        finally:
            self.peers.remove(peer)
            reader.cancel()
            ender.cancel()
            for task in stream.tasks.values():
                task.cancel()

    async def run(self, frame: fw.Frame, deadline: float | None) -> fw.Frame:
        """One request frame's reply frame, in a server span as a unary call's when tracing."""
        tracer = self.inference.tracing.tracer
        if tracer is None:
            return await self._run(frame, deadline)
        # The span the tracing interceptor gives a unary ModelInfer, under the gateway's.
        with tracer.start_as_current_span(
            INFER_METHOD,
            context=propagate.extract(dict(frame.metadata)),
            kind=trace.SpanKind.SERVER,
            attributes=SPAN_ATTRIBUTES,
        ) as span:
            reply = await self._run(frame, deadline)
            code = getattr(grpc.StatusCode, reply.status or "OK", grpc.StatusCode.UNKNOWN)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if reply.status:
                span.set_status(trace.Status(trace.StatusCode.ERROR, reply.message))
            return reply

    async def _run(self, frame: fw.Frame, deadline: float | None) -> fw.Frame:
        reply = fw.Frame(call_id=frame.call_id)
        try:
            if frame.method != "ModelInfer":
                raise _unimplemented(frame.method)
            request = self.decode(frame.payload)
            metadata = list(frame.metadata.items())
            routed(request, metadata)
            key_id = key_id_of(metadata)
            response = await _within(deadline, self.inference._infer(request, deadline, key_id))
            payload = response.SerializeToString()
            if self.max_reply_bytes is not None and len(payload) > self.max_reply_bytes:
                raise ResourceExhausted(
                    f"the response is {len(payload)} bytes, expected at most "
                    f"{self.max_reply_bytes} (the server's message size limit)"
                )
            reply.payload = payload
        except ServiceError as exc:
            reply.status, reply.message = exc.status, exc.message
        except TimeoutError:
            reply.status, reply.message = "DEADLINE_EXCEEDED", DEADLINE_MESSAGE
        except Exception:  # noqa: BLE001 - the per-call counterpart of the error interceptor
            _log.exception("unexpected error in %s (multiplexed)", INFER_METHOD)
            reply.status, reply.message = "INTERNAL", INTERNAL_MESSAGE
        return reply


class _Stream:
    """One Calls stream's open calls and the replies waiting to be written."""

    def __init__(self, servicer: ForwardServicer) -> None:
        self.servicer = servicer
        self.tasks: dict[int, asyncio.Task[None]] = {}
        # At most one reply per open call, plus the end: bounded by the window.
        self.replies: asyncio.Queue[fw.Frame | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(servicer.window)
        self.reading = True
        self.ended = False
        self.error: ServiceError | None = None

    async def read(self, requests: AsyncIterator[Any]) -> None:
        loop = asyncio.get_running_loop()
        iterator = aiter(requests)
        try:
            while True:
                batch = await anext(iterator)
                for frame in batch.frames:
                    if frame.cancel:
                        task = self.tasks.pop(frame.call_id, None)
                        if task is not None:
                            task.cancel()
                            self.slots.release()
                            self.maybe_end()
                        continue
                    if self.servicer.draining.is_set():
                        self.replies.put_nowait(
                            fw.Frame(call_id=frame.call_id, status="UNAVAILABLE", message=DRAINING)
                        )
                        continue
                    # A full window pauses the reading (grpc's flow control then holds
                    # the gateway), never a queue that grows.
                    await self.slots.acquire()
                    timeout = frame.timeout_us / 1e6 if frame.timeout_us else None
                    deadline = None if timeout is None else loop.time() + timeout
                    self.tasks[frame.call_id] = asyncio.ensure_future(self.answer(frame, deadline))
        except StopAsyncIteration:
            pass  # the gateway closed its side: answer what is open, then end
        except ServiceError as exc:  # a message that did not decode ends the stream
            self.error = exc
        except grpc.aio.AioRpcError:
            pass  # the call is gone; nobody to answer
        finally:
            self.reading = False
            self.maybe_end()

    async def answer(self, frame: fw.Frame, deadline: float | None) -> None:
        self.servicer.open_calls += 1
        try:
            reply = await self.servicer.run(frame, deadline)
        finally:
            self.servicer.open_calls -= 1
            if self.tasks.pop(frame.call_id, None) is not None:
                self.slots.release()
        self.replies.put_nowait(reply)
        self.maybe_end()

    async def end_on_drain(self) -> None:
        await self.servicer.draining.wait()
        self.maybe_end()

    def maybe_end(self) -> None:
        if self.ended or self.tasks:
            return
        if not self.reading or self.servicer.draining.is_set():
            self.ended = True
            self.replies.put_nowait(None)


async def _within(deadline: float | None, work: Any) -> Any:
    """`work` awaited until `deadline` (event-loop time): TimeoutError after it."""
    if deadline is None:
        return await work
    async with asyncio.timeout_at(deadline):
        return await work


def _unimplemented(method: str) -> ServiceError:
    return Unimplemented(f"method '{method[:64]}' is not multiplexed; expected ModelInfer")


def forward_binding(servicer: ForwardServicer) -> ServiceBinding:
    """How the inference server registers the Forward service."""
    return ServiceBinding(
        SERVICE_NAME, lambda s: fw_grpc.add_ForwardServicer_to_server(servicer, s)
    )
