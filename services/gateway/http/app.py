"""The gateway's ASGI application: the v2 REST routes and the one error mapping."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from services.gateway.http.deps import HttpDeps
from services.gateway.http.errors import EXCEPTION_HANDLERS, ErrorMiddleware
from services.gateway.http.infer import infer_routes
from services.gateway.http.meta import meta_routes


def build_app(deps: HttpDeps) -> Starlette:
    """The Starlette app serving every HTTP route over `deps`."""
    return Starlette(
        routes=[*meta_routes(deps), *infer_routes(deps)],
        middleware=[Middleware(ErrorMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
