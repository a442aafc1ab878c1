"""The gateway's side of maas.internal.v1 Forward: calls to a backend, many to a stream.

Why: a message on an open grpc.aio stream costs the gateway far less CPU than a
unary call. Each backend gets `connections` channels of its own (distinct
subchannels, so a backend running several workers on one port gets calls on all
of them), each with at most one open Calls stream carrying up to `window` calls.
A call goes to the least busy stream; when every stream is full it waits, within
its deadline, for a slot (never an unbounded queue).

A call fails as a unary call would (CallFailed has its code and details): the
backend's status and message; DEADLINE_EXCEEDED when the deadline passes (a
cancel frame then stops the backend's work); UNAVAILABLE when the stream breaks
(a backend restart), the stream being opened again on the next call. A backend
that has no Forward service (UNIMPLEMENTED) raises Unsupported, and the caller
sends that call, and those of the next `RETRY_SECONDS`, the unary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from maas_proto.internal.v1 import forward_pb2 as fw

from services.common.tls_client import ChannelSource, ClientTLS

_log = logging.getLogger(__name__)
CALLS_PATH = "/maas.internal.v1.Forward/Calls"
# Calls one stream carries at once; the backend reads no further than as many.
WINDOW = 256
# How long a backend without the Forward service is called the unary way before
# the gateway asks again (it may have been upgraded in place).
RETRY_SECONDS = 60.0
STREAM_BROKE = "the backend's call stream ended"
DEADLINE_MESSAGE = "Deadline Exceeded"
# Requests larger than this go unary: copying them costs more than a call does, and
# on a shared stream they would hold up the small ones behind them.
MAX_REQUEST_BYTES = 1 << 20
# The most request bytes one stream message carries (a single request may be larger).
BATCH_BYTES = 4 << 20
# What a frame adds around a reply: the channel's receive limit grows by as much, so
# a reply the unary path could take fits in a frame too.
FRAME_HEADROOM = 64 << 10
# A backend's answer that concerns the gateway's own credentials, kept as it is.
_KEPT = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class CallFailed(Exception):
    """A multiplexed call's failure, read like grpc.aio.AioRpcError (code, details)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Unsupported(Exception):
    """The backend has no Forward service; the call was not run there."""


def _status(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


class CallStream:
    """One open Calls stream: its calls in flight, matched to replies by id."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Sequence[tuple[str, str]],
        batch_bytes: int = 0,
    ) -> None:
        self.channel = channel
        self.batch_bytes = batch_bytes or BATCH_BYTES
        # No serializers on the payloads: frames carry the request bytes as they came.
        self.call: Any = channel.stream_stream(
            CALLS_PATH,
            request_serializer=fw.Frames.SerializeToString,
            response_deserializer=fw.Frames.FromString,
        )(metadata=tuple(metadata))
        self.pending: dict[int, asyncio.Future[fw.Frame]] = {}
        self.failure: BaseException | None = None
        self._ids = itertools.count(1)
        self._outbox: list[fw.Frame] = []
        self._writer: asyncio.Future[None] | None = None
        self._reader = asyncio.ensure_future(self._read())

    @property
    def alive(self) -> bool:
        return self.failure is None

    async def _read(self) -> None:
        failure: BaseException
        try:
            while True:
                frame = await self.call.read()
                if frame is grpc.aio.EOF:
                    failure = CallFailed(grpc.StatusCode.UNAVAILABLE, STREAM_BROKE)
                    break
                for reply in frame.frames:
                    future = self.pending.pop(reply.call_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            failure = _stream_failure(exc)
        except asyncio.CancelledError:
            failure = CallFailed(grpc.StatusCode.UNAVAILABLE, STREAM_BROKE)
        self._fail(failure)

    def _fail(self, failure: BaseException) -> None:
        if self.failure is None:
            self.failure = failure
        for future in self.pending.values():
            if not future.done():
                future.set_exception(self.failure)
        self.pending.clear()

    async def request(
        self,
        method: str,
        payload: bytes,
        timeout: float,
        metadata: Mapping[str, str],
    ) -> bytes:
        """Send one call and wait for its reply, at most `timeout` seconds."""
        if self.failure is not None:
            raise self.failure
        call_id = next(self._ids)
        future: asyncio.Future[fw.Frame] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self._post(
            fw.Frame(
                call_id=call_id,
                method=method,
                payload=payload,
                timeout_us=max(1, int(timeout * 1e6)),
                metadata=metadata,
            )
        )
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise CallFailed(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        finally:
            if self.pending.pop(call_id, None) is not None and self.failure is None:
                # Given up on (deadline, or the caller went away): the backend stops.
                self._post(fw.Frame(call_id=call_id, cancel=True))
            if future.done() and not future.cancelled():
                future.exception()  # failed with the stream: seen, whoever awaited it
        if reply.status:
            raise CallFailed(_status(reply.status), reply.message)
        return bytes(reply.payload)

    def _post(self, frame: fw.Frame) -> None:
        """Queue a frame to go out; those queued while a write is under way go together
        in the next message (one write for many calls under load). The writer is a task
        of its own, so a caller that goes away never cuts a write short."""
        self._outbox.append(frame)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._outbox and self.failure is None:
                frames = self._take()
                try:
                    await self.call.write(fw.Frames(frames=frames))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                    # The stream ended; its reader says why (UNIMPLEMENTED, a restart).
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(self._reader)
                    self._fail(_stream_failure(exc))
        finally:
            self._writer = None
            if self.failure is not None:
                self._outbox.clear()

    def _take(self) -> list[fw.Frame]:
        """The next message's frames: those queued, up to batch_bytes of payload (one
        at least), so that a message stays far below the channel's size limit."""
        size, count = 0, 0
        for frame in self._outbox:
            if count and size + len(frame.payload) > self.batch_bytes:
                break
            size += len(frame.payload)
            count += 1
        frames, self._outbox = self._outbox[:count], self._outbox[count:]
        return frames

    def close(self) -> None:
        """End the stream; calls still open on it fail UNAVAILABLE."""
        self.call.cancel()
        self._reader.cancel()
        if self._writer is not None:
            self._writer.cancel()


def _stream_failure(exc: BaseException) -> BaseException:
    """What a stream's end means for the calls it carried."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return Unsupported()
        if code in _KEPT:
            return CallFailed(code, exc.details() or code.name)
    # Whatever broke it, the backend did not answer these calls: try them elsewhere.
    return CallFailed(grpc.StatusCode.UNAVAILABLE, STREAM_BROKE)


class Multiplexer:
    """One backend's connections for multiplexed calls, and their streams."""

    def __init__(
        self,
        address: str,
        connections: int,
        *,
        tls: ClientTLS | None = None,
        options: Sequence[tuple[str, Any]] = (),
        tls_check_seconds: float | None = None,
        window: int = WINDOW,
        max_message_bytes: int | None = None,
    ) -> None:
        self.window = window
        # Well inside the channel's (and the backend's) message size limit.
        limit = max_message_bytes or 4 * BATCH_BYTES
        self.max_request_bytes = min(MAX_REQUEST_BYTES, limit // 4)
        self.batch_bytes = min(BATCH_BYTES, limit // 2)
        extra: dict[str, Any] = {}
        if tls_check_seconds is not None:
            extra["check_seconds"] = tls_check_seconds
        # A subchannel pool of each channel's own: without it grpc shares one
        # connection among channels to the same address with the same arguments.
        self.sources = [
            ChannelSource(
                address,
                tls,
                options=[*options, ("grpc.use_local_subchannel_pool", 1)],
                **extra,
            )
            for _ in range(max(1, connections))
        ]
        self.streams: list[CallStream | None] = [None] * len(self.sources)
        self._retired: list[CallStream] = []
        self._freed = asyncio.Event()
        self._next = 0
        self.unsupported_until = float("-inf")

    @property
    def supported(self) -> bool:
        """Whether to try the Forward service (it was not found lately)."""
        return time.monotonic() >= self.unsupported_until

    def _stream(self, i: int, metadata: Sequence[tuple[str, str]]) -> CallStream:
        """Connection i's open stream, opened anew when there is none, it broke, or the
        TLS files changed (the old one then finishes its calls and closes)."""
        channel = self.sources[i].current()
        stream = self.streams[i]
        if stream is not None and stream.alive and stream.channel is channel:
            return stream
        if stream is not None:
            if stream.alive and stream.pending:
                self._retired.append(stream)
            else:
                stream.close()
        stream = self.streams[i] = CallStream(channel, metadata, self.batch_bytes)
        return stream

    def _pick(self, metadata: Sequence[tuple[str, str]]) -> CallStream | None:
        """The least busy stream with room, starting at the next connection in turn."""
        best: CallStream | None = None
        count = len(self.sources)
        start, self._next = self._next, (self._next + 1) % count
        for k in range(count):
            stream = self._stream((start + k) % count, metadata)
            if len(stream.pending) < self.window and (
                best is None or len(stream.pending) < len(best.pending)
            ):
                best = stream
                if not stream.pending:
                    break
        return best

    async def call(
        self,
        method: str,
        payload: bytes,
        timeout: float,
        credentials: Sequence[tuple[str, str]],
        metadata: Mapping[str, str],
    ) -> bytes:
        """One call on a stream with room, waiting for room within `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (stream := self._pick(credentials)) is None:
            self._freed.clear()
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(remaining):
                    await self._freed.wait()
            except TimeoutError:
                raise CallFailed(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        try:
            return await stream.request(method, payload, deadline - loop.time(), metadata)
        except Unsupported:
            self.unsupported_until = time.monotonic() + RETRY_SECONDS
            _log.info("backend has no Forward service: calling it unary")
            raise
        finally:
            self._freed.set()
            self._close_retired()

    def _close_retired(self) -> None:
        for stream in [s for s in self._retired if not s.pending]:
            self._retired.remove(stream)
            stream.close()

    async def close(self) -> None:
        """Close every stream and channel."""
        for stream in [*self.streams, *self._retired]:
            if stream is not None:
                stream.close()
        self.streams = [None] * len(self.sources)
        self._retired.clear()
        for source in self.sources:
            await source.close()
