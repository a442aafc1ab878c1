"""Which models are text models, and of which kind, from their v2 metadata.

The /v1 routes serve embedding models (`text` in, `embedding` out) and generative
models (`text_input` or `messages` in, `text_output` out); any other model is not
listed and is refused with a 400 that says why. A model's kind is read from its
ModelMetadata through the router (the same lookup and version resolution as a
call; no rate charge: the call it serves is charged) and kept a short while, so a
request costs no extra round trip in the common case. The cache holds only models
a backend answered for, at most MAX_CACHED.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import DecodeError
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import Internal
from services.common.names import echo
from services.gateway import wire
from services.gateway.auth import ApiKey
from services.gateway.http.openai_errors import BadField
from services.gateway.http.openai_v2 import (
    EMBEDDING,
    MESSAGES,
    TEXT,
    TEXT_INPUT,
    TEXT_OUTPUT,
)
from services.gateway.routing import Call, Passed, Router

Kind = Literal["embedding", "generate"]
MAX_CACHED = 1000
# Seconds a model's kind is trusted before its metadata is read again.
TTL_SECONDS = 10.0
# Metadata reads in flight at once while listing models.
LIST_CONCURRENCY = 8
ROUTE_FOR: dict[Kind, str] = {
    "embedding": "the embeddings route",
    "generate": "the completions and chat completions routes",
}
WHAT: dict[Kind, str] = {
    "embedding": "an embedding model (input 'text', output 'embedding')",
    "generate": "a generative model (input 'text_input' or 'messages', output 'text_output')",
}


@dataclass(frozen=True)
class TextModel:
    """A model the /v1 routes serve: its kind and the input names it declares."""

    name: str
    kind: Kind | None
    inputs: frozenset[str]


def kind_of(metadata: pb.ModelMetadataResponse) -> TextModel:
    """A model's kind from its metadata (None: not a text model)."""
    inputs = frozenset(t.name for t in metadata.inputs)
    outputs = frozenset(t.name for t in metadata.outputs)
    kind: Kind | None = None
    if TEXT_OUTPUT in outputs and (TEXT_INPUT in inputs or MESSAGES in inputs):
        kind = "generate"
    elif EMBEDDING in outputs and TEXT in inputs:
        kind = "embedding"
    return TextModel(metadata.name, kind, inputs)


class Catalog:
    """Text models' kinds, read through the router and cached for TTL_SECONDS."""

    def __init__(self, router: Router, ttl: float = TTL_SECONDS) -> None:
        self.router = router
        self.ttl = ttl
        self.created = int(time.time())
        self._cache: dict[str, tuple[TextModel, float]] = {}

    async def model(
        self, key: ApiKey | None, name: str, deadline: float, passed: Passed
    ) -> TextModel:
        """The model's kind, from the cache or its metadata (NotFound when none has it)."""
        loop = asyncio.get_running_loop()
        cached = self._cache.get(name)
        if cached is not None and cached[1] > loop.time():
            return cached[0]
        serialized = pb.ModelMetadataRequest(name=name).SerializeToString()
        call = Call(
            key, wire.read_request(serialized), serialized, deadline, passed=passed, protocol="http"
        )
        await self.router.lookup(name)
        route = self.router.app.target(name, "")
        data, _ = await self.router.dispatch("ModelMetadata", call, route, passed)
        try:
            found = kind_of(pb.ModelMetadataResponse.FromString(data))
        except DecodeError:
            raise Internal("internal error") from None
        found = TextModel(name, found.kind, found.inputs)
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[name] = (found, loop.time() + self.ttl)
        return found

    async def require(
        self, key: ApiKey | None, name: str, kind: Kind, deadline: float, passed: Passed
    ) -> TextModel:
        """The model, when it is of `kind`; a 400 saying why not otherwise."""
        found = await self.model(key, name, deadline, passed)
        if found.kind != kind:
            other = (
                f"; it is {WHAT[found.kind]}, served by {ROUTE_FOR[found.kind]}"
                if found.kind
                else ""
            )
            raise BadField(
                "model",
                f"model {echo(name)}: expected {WHAT[kind]}, got a model that is not{other}",
            )
        return found

    async def listed(self, key: ApiKey | None, deadline: float) -> list[TextModel]:
        """The text models the key may use, with a version ready."""
        request = pb.RepositoryIndexRequest(ready=True).SerializeToString()
        rows = await self.router.index(key, request, deadline)
        names = sorted({r.name for r in rows if r.state == "READY"})
        gate = asyncio.Semaphore(LIST_CONCURRENCY)

        async def one(name: str) -> TextModel | None:
            async with gate:
                try:
                    return await self.model(key, name, deadline, ())
                except Exception:  # noqa: BLE001 - a model that cannot answer is not listed
                    return None

        found = await asyncio.gather(*(one(n) for n in names))
        return [m for m in found if m is not None and m.kind is not None]
