"""The settings base every service's settings class extends."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, Literal, Self, get_args

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KIB = 1024
MIB = 1024 * KIB
# The event loops a service can run on (services.common.server.run_service).
EventLoop = Literal["uvloop", "asyncio"]


class ServiceSettings(BaseSettings):
    """Listening address, limits and lifecycle settings shared by every service.

    Subclasses set `env_prefix` (`MAAS_INFERENCE_`, ...) and their own port defaults.
    Values come from keyword arguments (the command line), then the environment.
    """

    model_config = SettingsConfigDict(env_prefix="MAAS_", extra="ignore")

    host: str = Field("[::]", description="Address the gRPC server binds.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0 picks a free one."
    )
    max_message_bytes: int = Field(
        64 * MIB, gt=0, description="Largest gRPC message received or sent, in bytes."
    )
    max_metadata_bytes: int = Field(
        32 * KIB,
        ge=8 * KIB,
        description="Largest request metadata (headers) accepted; grpc core refuses up to "
        "twice this with RESOURCE_EXHAUSTED, and always beyond it.",
    )
    max_concurrent_streams: int = Field(
        1024,
        gt=0,
        description="Calls per connection, counted until the server has let go of them; "
        "beyond it grpc core refuses new streams on that connection (UNAVAILABLE), so a "
        "rapid-reset flood cannot fill the server's queue of calls.",
    )
    stream_window_bytes: int = Field(
        64 * KIB,
        ge=16 * KIB,
        le=16 * MIB,
        description="Bytes of a stream's requests grpc core takes off the wire before the "
        "server reads them (the HTTP/2 receive window, which BDP probing no longer grows): "
        "a client that writes to a stream the server does not read is pushed back after it.",
    )
    max_connection_idle_seconds: float = Field(
        300.0, gt=0, description="A connection with no call for this long is sent GOAWAY."
    )
    max_connection_age_seconds: float = Field(
        600.0,
        gt=0,
        description="Every connection is sent GOAWAY after this long (calls in flight "
        "finish): the bound on any one connection's life, a flooding one's included.",
    )
    handshake_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection that has not begun HTTP/2 by then is closed."
    )
    keepalive_seconds: float = Field(
        60.0, gt=0, description="The server pings a connection quiet for this long."
    )
    keepalive_timeout_seconds: float = Field(
        20.0, gt=0, description="A ping unanswered for this long closes the connection."
    )
    grace_seconds: float = Field(
        15.0, ge=0, description="How long in-flight calls may finish after SIGTERM."
    )
    log_level: str = Field("INFO", description="Logging level name.")
    port_file: str | None = Field(
        None, description="If set, the bound gRPC port is written here once serving."
    )
    tls_cert: str | None = Field(
        None,
        description="PEM certificate chain to serve TLS with (with tls_key); re-read when "
        "the file changes. Unset: plaintext.",
    )
    tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: str | None = Field(
        None,
        description="PEM CA certificates: clients must present a certificate they signed "
        "(mutual TLS).",
    )
    event_loop: EventLoop = Field(
        "uvloop",
        description="The event loop the service runs on: uvloop (the default) or the "
        'standard library\'s asyncio loop (docs/benchmarks.md, "The event loop").',
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Processes serving the port (inference and gateway): above 1, a "
        "supervisor runs that many workers on one SO_REUSEPORT port and merges their "
        "metrics (services/common/workers.py).",
    )

    @classmethod
    def from_args(cls, overrides: Mapping[str, Any]) -> Self:
        """Settings from the environment, with command-line values (not None) on top."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})


def add_server_flags(parser: argparse.ArgumentParser, port: int, metrics_port: int) -> None:
    """The flags every service takes for ServiceSettings' fields (unset: env, then default)."""
    parser.add_argument("--host", help="address to bind (default [::])")
    parser.add_argument("--port", type=int, help=f"gRPC port (default {port}; 0 picks one)")
    parser.add_argument("--port-file", help="write the bound gRPC port here once serving")
    parser.add_argument(
        "--metrics-port", type=int, help=f"metrics port (default {metrics_port}; 0 picks one)"
    )
    parser.add_argument("--max-message-bytes", type=int, help="gRPC message limit, both ways")
    parser.add_argument("--grace-seconds", type=float, help="drain time on SIGTERM")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--event-loop", choices=get_args(EventLoop), help="event loop (default uvloop)"
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)"
    )


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
    """--workers, for the services that can run several processes on one port."""
    parser.add_argument(
        "--workers",
        type=int,
        help="processes sharing the port, under a supervisor (default 1: no supervisor)",
    )
