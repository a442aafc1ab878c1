"""What the HTTP routes are built with: the same app layer the gRPC servicer uses."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.app import GatewayApp
from services.gateway.metrics import GatewayMetrics
from services.gateway.routing import Router


@dataclass(frozen=True)
class HttpDeps:
    """The app layer and the limits every HTTP route shares."""

    app: GatewayApp
    router: Router
    # Seconds given to a request that names no timeout (the gRPC default deadline).
    default_timeout: float
    # The largest request body, as the gRPC message limit (max_message_bytes).
    max_body_bytes: int
    # Header names passed on to backends, as GatewayServicer.passed_keys.
    passed_keys: frozenset[str]
    metrics: GatewayMetrics
    # Where the OpenAI-compatible routes are mounted.
    openai_prefix: str = "/v1"
