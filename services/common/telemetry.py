"""OpenTelemetry tracing from the standard OTEL_* environment variables.

Tracing is on only when an OTLP endpoint is configured. Off, every tracer is
the no-op tracer and no interceptor is installed, so it costs next to nothing.
W3C trace context (traceparent, tracestate, baggage) travels in gRPC metadata
through the official gRPC instrumentation, on incoming and outgoing calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

__all__ = ["AttributeValue", "Telemetry", "Tracing"]
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True)
class Tracing:
    """Starts spans when tracing is on, and costs a no-op context when it is off.

    The no-op tracer still attaches and detaches a context per span (several
    microseconds); on the request path that is worth skipping.
    """

    tracer: trace.Tracer | None = None

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded."""
        return self.tracer is not None

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        links: Sequence[trace.Link] = (),
        context: Context | None = None,
    ) -> AbstractContextManager[trace.Span | None]:
        """A span made current for the `with` block, or nothing when tracing is off."""
        if self.tracer is None:
            return nullcontext()
        return self.tracer.start_as_current_span(
            name, context=context, attributes=attributes, links=links
        )

    def record(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        parent: trace.SpanContext | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """A span that already happened (wall-clock ns), under `parent` or the current span."""
        if self.tracer is None:
            return
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        span = self.tracer.start_span(
            name, context=context, attributes=attributes, start_time=start_ns
        )
        span.end(end_time=end_ns)

    def current(self) -> trace.SpanContext | None:
        """The current span's context, to link to or parent under later; None when off."""
        if self.tracer is None:
            return None
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    def under(self, parent: trace.SpanContext | None) -> Context | None:
        """A context whose current span is `parent`, for starting children elsewhere."""
        return trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None


@dataclass
class Telemetry:
    """One process's tracing: a provider when on, and the interceptors that use it."""

    provider: TracerProvider | None = None

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Telemetry:
        """Tracing for `service` as the OTEL_* variables say; off without an endpoint."""
        env = os.environ if env is None else env
        enabled = any(env.get(name) for name in ENDPOINT_VARS)
        if not enabled or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return cls()
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The SDK reads OTEL_TRACES_SAMPLER (parent-based by default) and
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES itself.
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded and exported."""
        return self.provider is not None

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer; the no-op tracer when tracing is off."""
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(name)

    def tracing(self, name: str) -> Tracing:
        """Span helper for a component; free when tracing is off."""
        return Tracing(self.provider.get_tracer(name) if self.provider is not None else None)

    def server_interceptors(self) -> Sequence[grpc.aio.ServerInterceptor]:
        """The gRPC server span interceptor (reads incoming trace context), if on."""
        if self.provider is None:
            return ()
        return (aio_server_interceptor(tracer_provider=self.provider),)

    def client_interceptors(self) -> Sequence[grpc.aio.ClientInterceptor]:
        """The gRPC client interceptors (inject trace context into metadata), if on."""
        if self.provider is None:
            return ()
        return tuple(aio_client_interceptors(tracer_provider=self.provider))

    def shutdown(self) -> None:
        """Flush and stop exporting."""
        if self.provider is not None:
            self.provider.shutdown()
