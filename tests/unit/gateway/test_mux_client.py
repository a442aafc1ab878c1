"""The multiplexing settings and flags, and what a broken Forward stream means for its calls."""

from __future__ import annotations

import grpc
import pytest

from services.gateway.main import build_parser
from services.gateway.mux import (
    BATCH_BYTES,
    MAX_REQUEST_BYTES,
    STREAM_BROKE,
    CallFailed,
    Multiplexer,
    Unsupported,
    _stream_failure,
)
from services.gateway.settings import GatewaySettings


def settings_of(*flags: str) -> GatewaySettings:
    return GatewaySettings.from_args(vars(build_parser().parse_args(["--no-auth", *flags])))


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_of("--no-backend-mux").backend_mux is False
    muxed = settings_of("--backend-mux", "--backend-connections", "4")
    assert (muxed.backend_mux, muxed.backend_connections) == (True, 4)
    monkeypatch.setenv("MAAS_GATEWAY_BACKEND_MUX", "false")
    monkeypatch.setenv("MAAS_GATEWAY_BACKEND_CONNECTIONS", "3")
    settings = GatewaySettings()
    assert (settings.backend_mux, settings.backend_connections) == (False, 3)
    with pytest.raises(ValueError, match="backend_connections"):
        GatewaySettings(backend_connections=0)


def failed(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_a_broken_stream_fails_its_calls_as_unavailable_without_addresses() -> None:
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL):
        failure = _stream_failure(failed(code, "failed to connect to all addresses; 10.0.0.1"))
        assert isinstance(failure, CallFailed)
        assert (failure.code(), failure.details()) == (grpc.StatusCode.UNAVAILABLE, STREAM_BROKE)


def test_the_gateway_credentials_and_a_missing_service_are_kept_apart() -> None:
    refused = _stream_failure(failed(grpc.StatusCode.UNAUTHENTICATED, "bad service token"))
    assert isinstance(refused, CallFailed)
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(_stream_failure(failed(grpc.StatusCode.UNIMPLEMENTED, "")), Unsupported)


async def test_message_sizes_stay_inside_the_limit() -> None:
    default = Multiplexer("localhost:1", 1, max_message_bytes=64 << 20)
    small = Multiplexer("localhost:1", 1, max_message_bytes=2 << 20)
    try:
        assert (default.max_request_bytes, default.batch_bytes) == (MAX_REQUEST_BYTES, BATCH_BYTES)
        # A quarter and a half of a small limit: a full message never exceeds it.
        assert (small.max_request_bytes, small.batch_bytes) == (512 << 10, 1 << 20)
    finally:
        await default.close()
        await small.close()
