"""GET /docs: Swagger UI over /openapi.json, its assets served from a package.

The assets come from openapi-ui-bundles (Swagger UI 5, which reads OpenAPI 3.1)
rather than a CDN, so the page works where the gateway reaches nothing outside.
"""

from __future__ import annotations

from openapi_ui_bundles import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.gateway.http.openapi import OPENAPI_PATH

DOCS_PATH = "/docs"
ASSETS_PATH = DOCS_PATH + "/assets"
_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>maas gateway API</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{OPENAPI_PATH}", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(_PAGE)


def docs_routes() -> list[BaseRoute]:
    """The page and its static assets (Swagger UI's dist files)."""
    assets = StaticFiles(directory=swagger_ui.static_path)
    return [Route(DOCS_PATH, _page, methods=["GET"]), Mount(ASSETS_PATH, app=assets)]
