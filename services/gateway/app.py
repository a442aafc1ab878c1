"""The gateway's decisions, in plain Python: who may call, and which version serves.

The router (services.gateway.routing) asks this for the key, the admission and
the Route of each request, and forwards the bytes wherever the Route says;
nothing here touches gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import Unavailable
from services.common.versions import is_number, selector
from services.gateway.auth import ApiKey, KeyTable
from services.gateway.canary import CanaryPolicy
from services.gateway.routes import LATEST, PRODUCTION, RouteTable

VERSION_HEADER = "x-maas-version"
# The gateway's own ServerMetadata answer, the same on both front ends.
SERVER_NAME = "maas"
EXTENSIONS = ("model_configuration", "statistics", "binary_tensor_data", "parameters")
# Why the gateway refuses RepositoryModelLoad and RepositoryModelUnload (UNIMPLEMENTED).
NO_LOAD = (
    "the gateway does not load models: upload a version to the registry "
    "(`maas models upload`) and point an alias at it; backends follow the registry"
)
NO_UNLOAD = (
    "the gateway does not unload models: archive or delete the version, or move "
    "its aliases, in the registry"
)


@dataclass(frozen=True)
class Route:
    """Where a request goes: the version sent as model_version ("" leaves it to the backend)."""

    model: str
    version: str
    # The version came from a traffic split rather than from the request.
    canary: bool = False
    # When `version` is an alias: its number, for a backend that knows no aliases.
    fallback: str = ""
    # The selector the version came from (after a pin or a split) and, with a registry,
    # the number it names now.
    selector: str = ""
    number: int | None = None


@dataclass(frozen=True)
class IndexRow:
    """One row of RepositoryIndex."""

    name: str
    version: str
    state: str
    reason: str = ""


def pinned_version(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The version an `x-maas-version` metadata entry pins, or None; InvalidArgument
    for a value that cannot select a version (services.common.versions.selector)."""
    for key, value in metadata or ():
        if key.lower() == VERSION_HEADER:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return selector(text.strip(), what=f"{VERSION_HEADER} header") or None
    return None


class GatewayApp:
    """Authentication, limits, version resolution and traffic splits."""

    def __init__(
        self,
        routes: RouteTable | None,
        canary: CanaryPolicy,
        keys: KeyTable | None,
        backends_ready: Callable[[], bool],
    ) -> None:
        self.routes = routes
        self.canary = canary
        self.keys = keys
        self.backends_ready = backends_ready
        self.draining = False

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> ApiKey | None:
        """The caller's API key (None when auth is off); UNAUTHENTICATED otherwise."""
        if self.keys is None:
            return None
        return self.keys.authenticate(metadata)

    async def admit(self, key: ApiKey | None, model: str) -> None:
        """May this key use this model now? PERMISSION_DENIED or RESOURCE_EXHAUSTED if not
        (UNAVAILABLE when a fail-closed shared limiter cannot be reached)."""
        if key is not None and self.keys is not None:
            await self.keys.admit(key, model)

    async def charge(self, key: ApiKey | None) -> None:
        """Count a call that names no model against the key's rate limit."""
        if key is not None and self.keys is not None:
            await self.keys.charge(key)

    async def spend_evaluations(self, key: ApiKey | None, cost: int) -> float:
        """Take an explanation's evaluations from the key's budget (what was taken: 0
        without auth); RESOURCE_EXHAUSTED when it has too few."""
        if key is None or self.keys is None:
            return 0.0
        return await self.keys.evaluations.spend(key, cost)

    async def refund_evaluations(self, key: ApiKey | None, amount: float) -> None:
        """Give back evaluations an explanation was charged but did not spend."""
        if key is not None and self.keys is not None:
            await self.keys.evaluations.refund(key, amount)

    def target(self, model: str, selector: str, *, canary: bool = False) -> Route:
        """The route a model and version selector name, without splits.

        The selector is checked here, so unknown models and versions never reach a
        backend. An alias (and "" when there is a production alias) is kept as the
        version with its number as the fallback, for backends that do not say what
        they have; the router (services.gateway.rollout) settles it on a number a
        backend has READY.
        """
        if self.routes is None:
            return Route(model, selector, canary, selector=selector)
        if not self.routes.loaded:
            raise Unavailable("the gateway has not loaded the model registry yet")
        number = self.routes.resolve(model, selector)
        alias = PRODUCTION if not selector else selector
        if not is_number(alias) and alias != LATEST and alias in self.routes.get(model).aliases:
            return Route(model, alias, canary, str(number), selector, number)
        return Route(model, str(number), canary, "", selector, number)

    def route(self, model: str, requested: str, pin: str | None = None) -> Route:
        """Where an inference request goes: a pin, else a split, else what it asked for."""
        if pin is not None:
            return self.target(model, pin)
        known = self.routes.models.get(model) if self.routes is not None else None
        choice = self.canary.choose(model, requested, known)
        if choice is None:
            return self.target(model, requested)
        return self.target(model, choice, canary=choice != requested)

    def ready(self) -> bool:
        """Registry loaded (when there is one), a backend healthy, not draining."""
        loaded = self.routes is None or self.routes.loaded
        return loaded and self.backends_ready() and not self.draining

    def index(self, key: ApiKey | None, ready_only: bool) -> list[IndexRow] | None:
        """The registry's models and versions, or None to ask a backend instead."""
        if self.routes is None:
            return None
        if not self.routes.loaded:
            raise Unavailable("the gateway has not loaded the model registry yet")
        rows = []
        for name, model in sorted(self.routes.models.items()):
            if key is not None and key.models is not None and name not in key.models:
                continue
            for number, version in sorted(model.versions.items()):
                if version.active:
                    rows.append(IndexRow(name, str(number), "READY"))
                elif not ready_only:
                    rows.append(IndexRow(name, str(number), "UNAVAILABLE", "archived"))
        return rows
