"""Reading a request body within the limit, decoding gzip or deflate as Triton accepts.

The limit is the gRPC message limit: Content-Length is checked before anything is
read, the bytes are counted while they arrive (a chunked body names no length),
and a compressed body is inflated in bounded steps, so no body over the limit is
ever held whole.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from services.common.errors import InvalidArgument, Unimplemented
from services.gateway.http.errors import BodyTooLarge

# wbits for zlib: gzip framing, and zlib framing (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_CHUNK = 1 << 20


def _too_large(limit: int, got: str) -> BodyTooLarge:
    return BodyTooLarge(f"request body too large: expected at most {limit} bytes, got {got}")


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise InvalidArgument(f"content-length: expected a number, got {declared[:64]!r}")
    if int(declared) > limit:
        raise _too_large(limit, declared.strip())


async def read_body(request: Request, limit: int) -> bytes:
    """The body (inflated when Content-Encoding says so); BodyTooLarge beyond `limit`."""
    _declared_length(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    inflater = None
    if encoding not in ("", "identity"):
        if encoding not in _WBITS:
            raise Unimplemented(
                f"content-encoding: expected gzip, deflate or identity, got {encoding[:64]!r}"
            )
        inflater = zlib.decompressobj(_WBITS[encoding])
    parts: list[bytes] = []
    size = received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit, f"more than {limit}")
        if inflater is None:
            parts.append(chunk)
            size += len(chunk)
            continue
        size += _inflate(inflater, chunk, parts, limit - size, limit)
    if inflater is not None:
        if not inflater.eof:
            raise InvalidArgument(f"request body: the {encoding} stream is truncated")
        if inflater.unused_data:
            raise InvalidArgument(f"request body: bytes after the end of the {encoding} stream")
    return b"".join(parts)


def _inflate(
    inflater: zlib._Decompress, chunk: bytes, parts: list[bytes], room: int, limit: int
) -> int:
    """Inflate `chunk` into `parts`, at most `room` bytes more; the bytes added."""
    added, data = 0, chunk
    try:
        while data:
            out = inflater.decompress(data, min(_CHUNK, room - added + 1))
            added += len(out)
            if added > room:
                raise _too_large(limit, f"more than {limit} once decoded")
            parts.append(out)
            data = inflater.unconsumed_tail
    except zlib.error:
        raise InvalidArgument("request body: not valid gzip or deflate data") from None
    return added
