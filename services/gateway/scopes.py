"""What an API key may do: the scopes, and which scope each v2 method needs.

As Triton's `--grpc-restricted-protocol` does, the v2 methods fall into groups a
key is granted one by one. Health (ServerLive, ServerReady) needs no scope: any
valid key may ask whether the gateway is up, as load balancers and dashboards do,
and the answer says nothing about models. A key without a `scopes` list has all
of them, so keys files written before scopes existed keep working.
"""

from __future__ import annotations

from collections.abc import Mapping

INFERENCE = "inference"
METADATA = "metadata"
STATISTICS = "statistics"
REPOSITORY = "repository"
ALL_SCOPES = frozenset({INFERENCE, METADATA, STATISTICS, REPOSITORY})

# None: any valid key (health).
METHOD_SCOPES: Mapping[str, str | None] = {
    "ServerLive": None,
    "ServerReady": None,
    "ServerMetadata": METADATA,
    "ModelMetadata": METADATA,
    "ModelConfig": METADATA,
    "ModelReady": METADATA,
    "ModelStatistics": STATISTICS,
    "ModelInfer": INFERENCE,
    "ModelStreamInfer": INFERENCE,
    "RepositoryIndex": REPOSITORY,
    "RepositoryModelLoad": REPOSITORY,
    "RepositoryModelUnload": REPOSITORY,
}

# The methods of the gateway's other services: maas.explain.v1.Explainer's Explain is
# inference (many evaluations of the model).
OTHER_SCOPES: Mapping[str, str | None] = {"Explain": INFERENCE}


def scope_of(method: str) -> str | None:
    """The scope a method needs (None: any valid key); KeyError for an unknown method,
    so a method added to a service cannot go unscoped by accident."""
    return METHOD_SCOPES[method] if method in METHOD_SCOPES else OTHER_SCOPES[method]


def parse_scopes(value: object, where: str) -> frozenset[str]:
    """A keys file's `scopes` list; absent (None) means every scope."""
    if value is None:
        return ALL_SCOPES
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(
            f"{where}: scopes must be a list of scope names ({', '.join(sorted(ALL_SCOPES))})"
        )
    unknown = sorted(set(value) - ALL_SCOPES)
    if unknown:
        raise ValueError(
            f"{where}: unknown scope {unknown[0][:64]!r}: expected one of "
            f"{', '.join(sorted(ALL_SCOPES))}"
        )
    return frozenset(value)
