"""A server span per HTTP request, continuing the caller's W3C trace context.

The gRPC side gets its server span from OpenTelemetry's gRPC instrumentation;
this does the same for HTTP (there is no ASGI instrumentation here), so the
Router's spans and the backend calls sit under the caller's `traceparent`.
Installed only while tracing is on.
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.telemetry import Tracing


class TraceMiddleware:
    """Starts a SERVER span named after the matched route template (not the raw path)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracing.tracer
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        with tracer.start_as_current_span(
            f"HTTP {method}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": "http"},
        ) as span:

            async def tracked(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, tracked)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
