"""The prototype pyvoy front's reading of a gRPC call's headers: grpc-timeout in each
unit, and the metadata passed to ModelInfer without pseudo- and transport headers."""

from __future__ import annotations

import pytest

from tools.bench.pyvoy_front import call_context, grpc_timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"5S", 5.0), (b"200m", 0.2), (b"1500u", 0.0015), (b"2M", 120.0), (b"1H", 3600.0)],
)
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert grpc_timeout(value) == pytest.approx(seconds)


def test_call_context_keeps_caller_metadata_only() -> None:
    headers = [
        (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"250m"),
        (b"x-maas-route-version", b"3"),
        (b"traceparent", b"00-abc-def-01"),
    ]
    context = call_context(headers)
    assert context.invocation_metadata() == (
        ("x-maas-route-version", "3"),
        ("traceparent", "00-abc-def-01"),
    )
    assert context.time_remaining() == pytest.approx(0.25)


def test_no_timeout_header_is_no_deadline() -> None:
    assert call_context([(b"te", b"trailers")]).time_remaining() is None
