"""The gateway's ASGI application: the v2 REST routes and the one error mapping."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from services.gateway.http.deps import HttpDeps
from services.gateway.http.docs import docs_routes
from services.gateway.http.errors import EXCEPTION_HANDLERS, ErrorMiddleware
from services.gateway.http.explain import explain_routes
from services.gateway.http.generate import generate_routes
from services.gateway.http.infer import infer_routes
from services.gateway.http.meta import meta_routes
from services.gateway.http.openai_app import openai_routes
from services.gateway.http.openapi import openapi_routes
from services.gateway.http.tracing import TraceMiddleware


def build_app(deps: HttpDeps) -> Starlette:
    """The Starlette app serving every HTTP route over `deps`."""
    middleware = [Middleware(ErrorMiddleware)]
    if deps.router.tracing.enabled:
        # Outermost, so that the span holds the error answers too.
        middleware.insert(0, Middleware(TraceMiddleware, tracing=deps.router.tracing))
    return Starlette(
        routes=[
            *meta_routes(deps),
            *infer_routes(deps),
            *explain_routes(deps),
            *generate_routes(deps),
            *openai_routes(deps, deps.openai_prefix),
            *openapi_routes(deps.openai_prefix),
            *docs_routes(),
        ],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
    )
