"""POST /v2/models/{m}[/versions/{v}]/infer: placeholder until the infer route lands."""

from __future__ import annotations

from starlette.routing import BaseRoute

from services.gateway.http.deps import HttpDeps


def infer_routes(deps: HttpDeps) -> list[BaseRoute]:
    """The inference routes (none yet)."""
    return []
