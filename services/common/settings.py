"""The settings base every service's settings class extends."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, Self

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


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
    grace_seconds: float = Field(
        15.0, ge=0, description="How long in-flight calls may finish after SIGTERM."
    )
    log_level: str = Field("INFO", description="Logging level name.")
    port_file: str | None = Field(
        None, description="If set, the bound gRPC port is written here once serving."
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
