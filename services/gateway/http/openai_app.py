"""The OpenAI-compatible routes, mounted under a prefix (/v1 by default) of the HTTP app.

A Starlette app of its own, so that every answer under the prefix, Starlette's
404 and 405 included, has OpenAI's error shape while the v2 routes keep KServe's.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from services.gateway.http.deps import HttpDeps
from services.gateway.http.errors import ErrorMiddleware
from services.gateway.http.openai_calls import OpenAIDeps
from services.gateway.http.openai_embeddings import embeddings_endpoint
from services.gateway.http.openai_errors import EXCEPTION_HANDLERS, error_response
from services.gateway.http.openai_generate import generate_endpoints
from services.gateway.http.openai_models import models_endpoints

PREFIX = "/v1"


def openai_routes(deps: HttpDeps, prefix: str = PREFIX) -> list[BaseRoute]:
    """The /v1 routes over the gateway's app layer, as one mount at `prefix`."""
    shared = OpenAIDeps(deps)
    listed, retrieve = models_endpoints(shared)
    completions, chat = generate_endpoints(shared)
    routes = [
        Route("/models", listed, methods=["GET"]),
        Route("/models/{model:path}", retrieve, methods=["GET"]),
        Route("/embeddings", embeddings_endpoint(shared), methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ErrorMiddleware, respond=error_response)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    return [Mount(prefix, app=app)]
