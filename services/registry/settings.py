"""The registry's settings: `MAAS_REGISTRY_*` environment variables or command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import MIB, ServiceSettings

GIB = 1024 * MIB


class RegistrySettings(ServiceSettings):
    """Settings of the model registry service."""

    model_config = SettingsConfigDict(env_prefix="MAAS_REGISTRY_", extra="ignore")

    port: int = Field(8011, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9011, ge=0, le=65535, description="Prometheus /metrics port.")
    data_dir: Path = Field(
        Path(".data/registry"),
        description="Holds blobs/ (model files) and, unless database_url is set, registry.db.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="postgresql://... to keep metadata in PostgreSQL, or sqlite:///PATH; "
        "default: SQLite at <data_dir>/registry.db.",
    )
    tokens_file: Path | None = Field(
        None,
        description="YAML file of tokens: {tokens: [{id, role: admin|reader, sha256|token}]}.",
    )
    admin_token: SecretStr | None = Field(None, description="A token allowed to change things.")
    reader_token: SecretStr | None = Field(None, description="A token allowed to read only.")
    no_auth: bool = Field(False, description="Serve without authentication (explicit opt-out).")
    max_model_bytes: int = Field(
        2 * GIB, gt=0, description="Largest upload (all files of a version together), in bytes."
    )
    opset_min: int = Field(7, ge=1, description="Lowest ai.onnx opset an upload may use.")
    opset_max: int = Field(23, ge=1, description="Highest ai.onnx opset an upload may use.")
    watch_history: int = Field(
        10_000, ge=1, description="How many change events are kept for Watch to replay."
    )
    watch_queue_size: int = Field(
        1000, ge=1, description="Events buffered per Watch subscriber before it gets RESYNC."
    )
    watch_poll_seconds: float = Field(
        1.0, gt=0, description="How often the change feed polls the database for events."
    )
    watch_bookmark_seconds: float = Field(
        30.0, gt=0, description="Idle time after which a Watch stream gets a BOOKMARK."
    )
    blob_url: str = Field(
        "",
        description="Where model files live: empty for <data_dir>/blobs on the local "
        "filesystem, s3://bucket/prefix for an S3-compatible object store (endpoint and "
        "credentials from the standard AWS_* environment). Uploads are staged under "
        "<data_dir> either way.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="The object store's endpoint; overrides AWS_ENDPOINT_URL."
    )
    gc_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="Blobs without a version are collected only once older than this, so "
        "an upload that has stored its files but not yet committed its version is never "
        "collected; it must exceed the longest upload.",
    )
    gc_interval_seconds: float = Field(
        3600.0, ge=0, description="How often blob garbage is collected; 0: only at start."
    )
    chunk_bytes: int = Field(
        1 * MIB, gt=0, le=16 * MIB, description="Size of the chunks a download is sent in."
    )

    @model_validator(mode="after")
    def _opset_range(self) -> Self:
        if self.opset_min > self.opset_max:
            raise ValueError(
                f"opset_min {self.opset_min} is above opset_max {self.opset_max}: "
                "expected opset_min <= opset_max"
            )
        return self

    @model_validator(mode="after")
    def _blob_url_scheme(self) -> Self:
        if self.blob_url and not self.blob_url.startswith("s3://"):
            raise ValueError(
                f"blob_url: expected empty or s3://bucket/prefix, got {self.blob_url!r}"
            )
        return self

    def database(self) -> str | None:
        """The database URL, unwrapped."""
        return self.database_url.get_secret_value() if self.database_url else None
