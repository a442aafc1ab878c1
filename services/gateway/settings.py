"""Settings of the gateway (env prefix MAAS_GATEWAY_); the Helm chart sets these names."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.tls_client import CallerSettings
from services.gateway.balancer import DEFAULT_PICKER, PICKERS

# What the gateway does when the shared rate limiter (Redis) fails; see
# services.gateway.limiter and docs/scale-out.md for why fail-open is the default.
RateLimitPolicy = Literal["fail-open", "fail-closed"]


class GatewaySettings(CallerSettings):
    """Where models are resolved and served, who may call, and how calls are forwarded."""

    model_config = SettingsConfigDict(env_prefix="MAAS_GATEWAY_", extra="ignore")

    port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9001, ge=0, le=65535, description="Prometheus /metrics port.")
    http_port: int = Field(
        8000, ge=0, le=65535, description="HTTP (KServe v2 REST) port; 0 picks a free one."
    )
    http_port_file: str | None = Field(
        None, description="If set, the bound HTTP port is written here once serving."
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        description="HTTP connections (and requests in flight) at once; beyond it new "
        "requests get 503.",
    )
    http_keep_alive_seconds: float = Field(
        75.0, gt=0, description="An idle HTTP keep-alive connection is closed after this long."
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="An HTTP connection that has not sent a request's headers this long "
        "after connecting (or after its last answer) is closed.",
    )
    http_openai_prefix: str = Field(
        "/v1",
        pattern=r"^(/[A-Za-z0-9._~-]+)+$",
        description="Path prefix of the OpenAI-compatible routes on the HTTP port (KServe "
        "uses /openai/v1).",
    )
    registry: str | None = Field(
        None,
        description="Registry host:port (or a gRPC target naming several replicas, "
        "ipv4:HOST:P1,HOST:P2) to resolve versions and aliases through; without it, "
        "model_version is forwarded as given.",
    )
    registry_token: SecretStr | None = Field(None, description="Reader token for the registry.")
    backends: str = Field("", description="Comma-separated static inference backends host:port.")
    backend_token: SecretStr | None = Field(
        None,
        description="Service token sent to every inference backend as 'authorization: Bearer' "
        "(inference's MAAS_INFERENCE_SERVICE_TOKEN); unset: backends are called without one.",
    )
    backend_dns: str | None = Field(
        None,
        description="name:port of a headless Service, re-resolved periodically; every A/AAAA "
        "record is a backend.",
    )
    backend_endpointslice: str | None = Field(
        None,
        description="Service name (optionally :port, by name or number; default the port named "
        "'grpc') whose EndpointSlices are watched through the Kubernetes API.",
    )
    namespace: str | None = Field(
        None, description="Kubernetes namespace of that Service (default: the pod's own)."
    )
    dns_refresh_seconds: float = Field(
        5.0, gt=0, description="How often backend_dns is resolved again."
    )
    api_keys_file: str | None = Field(
        None,
        description="YAML file {keys: [{id, sha256 | key, rate_per_second, burst, models, "
        "scopes}]}; scopes of inference, metadata, statistics, repository (default all).",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys, each 'key' or 'id:key', without limits; "
        "hashed at load.",
    )
    no_auth: bool = Field(False, description="Serve without API keys (explicit opt-out).")
    balancer: str = Field(
        DEFAULT_PICKER,
        description=f"Per-request choice of backend, one of: {', '.join(PICKERS)} (least "
        "in-flight, or the less loaded of two at random).",
    )
    default_timeout_seconds: float = Field(
        30.0, gt=0, description="Deadline given to calls that arrive without one."
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Backends tried per request on UNAVAILABLE, within deadline."
    )
    eject_base_seconds: float = Field(
        1.0, gt=0, description="First ejection of a failing backend; doubles per failure."
    )
    eject_max_seconds: float = Field(30.0, gt=0, description="Longest ejection of a backend.")
    probe_timeout_seconds: float = Field(
        1.0, gt=0, description="Timeout of a health Check on a backend."
    )
    ready_wait_seconds: float = Field(
        2.0,
        ge=0,
        description="How long a call waits, within its deadline, for a backend with its model "
        "ready when none has it (a replica restarting, a version loading) before UNAVAILABLE.",
    )
    canary_file: str | None = Field(
        None,
        description="YAML {canary: {model: {version_or_alias: weight, ...}}}; overrides "
        "registry canary labels for the models it names.",
    )
    stream_window: int = Field(
        64, ge=1, description="Requests of one ModelStreamInfer call forwarded at once."
    )
    backend_mux: bool = Field(
        True,
        description="Multiplex ModelInfer calls to backends on a few long-lived streams "
        "(maas.internal.v1 Forward); false: one unary call each. A backend without the "
        "Forward service is called unary either way.",
    )
    backend_connections: int = Field(
        2,
        ge=1,
        le=64,
        description="Connections per backend for multiplexed calls, each its own HTTP/2 "
        "connection, so a backend's --workers all get calls.",
    )
    max_streams_per_key: int = Field(
        64,
        ge=1,
        description="ModelStreamInfer calls one API key may have open at once; one more is "
        "RESOURCE_EXHAUSTED until one ends (no per-key cap with --no-auth).",
    )
    explain_evaluations_per_second: float = Field(
        1000.0,
        gt=0,
        description="Model evaluations per second an API key's explanations may spend (a "
        "budget apart from its request rate; a key's explain_evaluations_per_second in the "
        "keys file overrides it). Shared by every replica through rate_limit_redis_url when set.",
    )
    explain_evaluations_burst: float = Field(
        8192.0,
        gt=0,
        description="The most evaluations a key's explanation budget holds (an explanation "
        "costs its max_evaluations, default 2048; a cost over the burst is admitted when "
        "the budget is full); explain_evaluations_burst in the keys file overrides it.",
    )

    rate_limit_redis_url: SecretStr | None = Field(
        None,
        description="redis:// or rediss:// (TLS) URL of the Redis that holds every replica's "
        "rate-limit buckets, so a key's rate holds across replicas (rediss:// verifies against "
        "?ssl_ca_certs=/path, else tls_ca, else the system CAs); unset: each replica counts "
        "its own. It may hold a password: a secret, never logged.",
    )
    rate_limit_redis_policy: RateLimitPolicy = Field(
        "fail-open",
        description="When Redis fails: fail-open (each replica applies its own limits; a "
        "metric, and a log line at most once a minute) or fail-closed (rate-limited keys' "
        "requests get UNAVAILABLE).",
    )
    rate_limit_redis_timeout_seconds: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Longest wait for Redis (connect, answer, a pooled connection) before the "
        "policy applies; Redis is then left alone for a second.",
    )

    @field_validator("balancer")
    @classmethod
    def _known_balancer(cls, value: str) -> str:
        if value not in PICKERS:
            raise ValueError(f"unknown balancer {value!r}: expected one of {', '.join(PICKERS)}")
        return value

    @model_validator(mode="after")
    def _ejection_range(self) -> Self:
        if self.eject_base_seconds > self.eject_max_seconds:
            raise ValueError(
                f"eject_base_seconds {self.eject_base_seconds} is above eject_max_seconds "
                f"{self.eject_max_seconds}: expected base <= max"
            )
        return self

    def backend_list(self) -> list[str]:
        """The static backends, cleaned."""
        return [b.strip() for b in self.backends.split(",") if b.strip()]

    def secret(
        self,
        name: Literal["registry_token", "api_keys", "backend_token", "rate_limit_redis_url"],
    ) -> str | None:
        """A secret setting unwrapped, or None."""
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value() if value is not None else None
