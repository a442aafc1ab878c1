"""POST /v1/completions and /v1/chat/completions over a generative model's v2 I/O.

Both translate to one v2 request (services.gateway.http.openai_v2): a prompt as
`text_input`, chat messages as `messages` (the model renders its own chat
template). Without `stream` the answer is one Router.infer call; with it, a
backend stream (Router.stream_infer) whose responses become OpenAI chunks. The
first response is awaited before the answer starts, so a refusal (unknown model,
rate limit, bad input) still gets its HTTP status; leaving the chunk iterator,
by its end or by the client going away, closes the backend stream and so cancels
the generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import ServiceError
from services.gateway.auth import ApiKey
from services.gateway.http import calls
from services.gateway.http.errors import JSON
from services.gateway.http.openai_calls import (
    Endpoint,
    OpenAIDeps,
    count_tokens,
    deadline,
    infer_call,
    new_id,
    now,
    read_request,
    usage,
)
from services.gateway.http.openai_schemas import ChatRequest, CompletionRequest
from services.gateway.http.openai_sse import sse_response
from services.gateway.http.openai_v2 import (
    Generated,
    generate_request,
    generated,
    generated_reply,
)
from services.gateway.http.streams import backend_stream
from services.gateway.routing import Call


@dataclass(frozen=True)
class Shape:
    """How one of the two routes writes its objects."""

    chat: bool

    @property
    def prefix(self) -> str:
        return "chatcmpl" if self.chat else "cmpl"

    def whole(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def delta(self, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


def _finish(reason: str | None) -> str:
    """OpenAI's finish_reason ("stop" when the model did not say)."""
    return reason if reason in ("stop", "length") else "stop"


async def _parts(deps: OpenAIDeps, call: Call) -> AsyncGenerator[Generated, None]:
    """A backend stream's parts until the final one (services.gateway.http.streams);
    closing this closes it."""
    async with contextlib.aclosing(backend_stream(deps.http.router, call)) as responses:
        async for response in responses:
            yield generated(response)


class GenerateRoutes:
    """The two routes over one catalog and router."""

    def __init__(self, deps: OpenAIDeps) -> None:
        self.deps = deps

    async def completions(self, request: Request) -> Response:
        key, body = await read_request(self.deps, request, CompletionRequest)
        return await self._answer(request, key, body, Shape(chat=False))

    async def chat(self, request: Request) -> Response:
        key, body = await read_request(self.deps, request, ChatRequest)
        return await self._answer(request, key, body, Shape(chat=True))

    async def _answer(
        self,
        request: Request,
        key: ApiKey | None,
        body: CompletionRequest | ChatRequest,
        shape: Shape,
    ) -> Response:
        deps = self.deps
        until, passed = deadline(deps, request), calls.passed(deps.http, request)
        model = await deps.catalog.require(key, body.model, "generate", until, passed)
        serialized = generate_request(
            body.model,
            model.inputs,
            prompt=body.prompt if isinstance(body, CompletionRequest) else None,
            messages=body.rendered() if isinstance(body, ChatRequest) else None,
            sampling=body.sampling(),
            stream=body.stream,
        )
        call = infer_call(deps, request, key, serialized, until)
        if body.stream:
            return await self._stream(call, key, body, shape)
        answer = await deps.http.router.infer(call)
        got = generated_reply(answer.data)
        count_tokens(deps, key, body.model, got.prompt_tokens, got.completion_tokens)
        reply = {
            "id": new_id(shape.prefix),
            "object": shape.object,
            "created": now(),
            "model": body.model,
            "system_fingerprint": None,
            "choices": [shape.whole(got.text, _finish(got.finish_reason))],
            "usage": usage(got.prompt_tokens, got.completion_tokens),
        }
        return Response(orjson.dumps(reply), media_type=JSON)

    async def _stream(
        self, call: Call, key: ApiKey | None, body: CompletionRequest | ChatRequest, shape: Shape
    ) -> Response:
        parts = _parts(self.deps, call)
        try:
            first = await anext(parts)
        except StopAsyncIteration:
            first = Generated("")
        except ServiceError:
            await parts.aclose()
            raise
        base = {
            "id": new_id(shape.prefix),
            "object": shape.chunk_object,
            "created": now(),
            "model": body.model,
            "system_fingerprint": None,
        }
        return sse_response(self._chunks(first, parts, base, key, body, shape))

    async def _chunks(
        self,
        first: Generated,
        parts: AsyncGenerator[Generated, None],
        base: dict[str, Any],
        key: ApiKey | None,
        body: CompletionRequest | ChatRequest,
        shape: Shape,
    ) -> AsyncIterator[dict[str, Any]]:
        with_usage = body.include_usage
        extra: dict[str, Any] = {"usage": None} if with_usage else {}
        prompt = completion = None
        finish: str | None = None
        if shape.chat:
            yield base | {"choices": [shape.delta("", None, first=True)]} | extra
        try:
            part: Generated | None = first
            while part is not None:
                prompt = part.prompt_tokens if part.prompt_tokens is not None else prompt
                if part.completion_tokens is not None:
                    completion = part.completion_tokens
                finish = part.finish_reason or finish
                if part.text:
                    yield base | {"choices": [shape.delta(part.text, None)]} | extra
                part = None if part.final else await anext(parts, None)
        finally:
            await parts.aclose()
            count_tokens(self.deps, key, body.model, prompt, completion)
        yield base | {"choices": [shape.delta(None, _finish(finish))]} | extra
        if with_usage:
            yield base | {"choices": [], "usage": usage(prompt, completion)}


def generate_endpoints(deps: OpenAIDeps) -> tuple[Endpoint, Endpoint]:
    """The completions and chat completions endpoints over `deps`."""
    routes = GenerateRoutes(deps)
    return routes.completions, routes.chat
