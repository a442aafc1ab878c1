"""Settings of the inference service (env prefix MAAS_INFERENCE_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.tls_client import CallerSettings


class InferenceSettings(CallerSettings):
    """Where models come from and how the server listens."""

    model_config = SettingsConfigDict(env_prefix="MAAS_INFERENCE_", extra="ignore")

    port: int = Field(8021, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9021, ge=0, le=65535, description="Prometheus /metrics port.")
    model_repository: str | None = Field(
        None, description="Directory laid out as <model>/<version>/model.onnx."
    )
    registry: str | None = Field(
        None,
        description="Registry address host:port, or a gRPC target naming several replicas "
        "(ipv4:HOST:P1,HOST:P2 fails over); serve what the registry says.",
    )
    registry_token: str | None = Field(None, description="Reader token for the registry.")
    service_token: SecretStr | None = Field(
        None,
        description="The token callers (the gateway) must send as 'authorization: Bearer'; "
        "hashed at load. With neither this nor service_tokens_file, every call is accepted.",
    )
    service_tokens_file: str | None = Field(
        None, description="YAML file {tokens: [{id, sha256 | token}]} of service tokens."
    )
    models: str = Field(
        "",
        description="Comma-separated models (or model:alias) to serve in registry mode; "
        "empty serves all.",
    )
    cache_dir: str = Field(
        ".data/inference-cache", description="Where registry models are cached on disk."
    )
    load_retry_seconds: float = Field(
        1.0,
        gt=0,
        description="Registry mode: first wait before a failed load is tried again with the "
        "same files and config; it doubles per failure, up to load_retry_max_seconds.",
    )
    load_retry_max_seconds: float = Field(
        300.0, gt=0, description="Registry mode: the longest wait between load attempts."
    )
    require_cuda: bool = Field(False, description="Fail model loads that would not run on CUDA.")
    max_tensor_elements: int = Field(
        1 << 26, gt=0, description="Most elements one input tensor may have."
    )
    max_bytes_elements: int = Field(
        1 << 20,
        gt=0,
        description="Most elements one BYTES input tensor may have: each costs Python "
        "objects as it is decoded, run and encoded (checked before decoding).",
    )
    explain_max_evaluations: int = Field(
        8192,
        gt=0,
        description="Most model evaluations (rows) one Explain request may ask for as "
        "max_evaluations; a request that asks none gets min(2048, this).",
    )
