"""POST /v1/embeddings: one v2 call to an embedding model for all the inputs."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.http.errors import JSON
from services.gateway.http.openai_calls import (
    Endpoint,
    OpenAIDeps,
    count_tokens,
    infer_call,
    read_request,
    usage,
)
from services.gateway.http.openai_errors import BadField
from services.gateway.http.openai_schemas import EmbeddingRequest
from services.gateway.http.openai_v2 import embedding_request, embeddings


def _vector(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64: the little-endian float32 bytes, as the openai package decodes it.
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()


def embeddings_endpoint(deps: OpenAIDeps) -> Endpoint:
    """The route's endpoint over `deps`."""

    async def create(request: Request) -> Response:
        key, body = await read_request(deps, request, EmbeddingRequest)
        call = infer_call(deps, request, key, embedding_request(body.model, body.input))
        await deps.catalog.require(key, body.model, "embedding", call.deadline, call.passed)
        answer = await deps.http.router.infer(call)
        vectors, tokens = embeddings(answer.data)
        if body.dimensions is not None and body.dimensions != vectors.shape[1]:
            raise BadField(
                "dimensions",
                f"'dimensions': expected {vectors.shape[1]} (the model's size), "
                f"got {body.dimensions}",
            )
        count_tokens(deps, key, body.model, tokens, None)
        spent = usage(tokens, None)
        return Response(
            orjson.dumps(
                {
                    "object": "list",
                    "data": [
                        {
                            "object": "embedding",
                            "index": i,
                            "embedding": _vector(row, body.encoding_format),
                        }
                        for i, row in enumerate(vectors)
                    ],
                    "model": body.model,
                    "usage": {
                        "prompt_tokens": spent["prompt_tokens"],
                        "total_tokens": spent["total_tokens"],
                    },
                }
            ),
            media_type=JSON,
        )

    return create
