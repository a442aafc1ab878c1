"""Server-Sent Events as OpenAI streams them: `data: {json}` events, then `data: [DONE]`.

The response is a Starlette StreamingResponse: on uvicorn (ASGI spec 2.3) it
listens for the client's disconnect while it streams and cancels the body
iterator when it comes, and the iterator's cleanup (services.gateway.http.
openai_generate) cancels the backend stream, so a client that goes away stops
its generation. An error after the answer started is sent as an `error` event,
as OpenAI does, since the status line is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from services.gateway.http.openai_errors import describe

DONE = b"data: [DONE]\n\n"
# No proxy may hold the events back (nginx honours x-accel-buffering).
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event(data: dict[str, Any]) -> bytes:
    """One `data:` event."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _framed(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield event(chunk)
    except Exception as exc:  # noqa: BLE001 - the status is sent: the error goes as an event
        _, body, _ = describe(exc)
        yield event(body)
        return
    yield DONE


def sse_response(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """A text/event-stream answer of `chunks`, ending in [DONE] (or an error event)."""
    return StreamingResponse(_framed(chunks), media_type="text/event-stream", headers=HEADERS)
