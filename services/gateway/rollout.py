"""Which version takes a request while a new one is rolled out: only one a backend has READY.

The registry moves first: a new version, or an alias moved, is in the route table
as soon as its event arrives, while backends still download and load it. Until a
backend has the named version READY, a request that named no number stays on
the version its selector served before (an alias's previous target, or the newest
version that is ready), so a rollout costs no request an error. A request that
names a number gets that number, ready or not.
"""

from __future__ import annotations

from dataclasses import replace

from services.common.versions import is_number
from services.gateway.app import Route
from services.gateway.routes import LATEST, PRODUCTION, ModelRoute


def alias_of(route: Route, model: ModelRoute) -> str:
    """The alias a route's selector follows ("" for a number or for the latest)."""
    selector = route.selector
    if is_number(selector) or selector == LATEST:
        return ""
    if not selector:
        return PRODUCTION if PRODUCTION in model.aliases else ""
    return selector


class Rollouts:
    """Settles routes on ready versions and remembers what each alias last served."""

    def __init__(self, limit: int = 10_000) -> None:
        # (model, alias) -> the version it served last: registry names only, and at most
        # `limit` of them (models deleted from the registry leave theirs behind).
        self._serving: dict[tuple[str, str], int] = {}
        self._limit = limit

    def settle(
        self, route: Route, model: ModelRoute | None, ready: frozenset[int] | None
    ) -> tuple[Route, bool]:
        """The route with a number some backend has READY, and whether it had to stand in
        for the number the selector names now (a rollout in progress).

        `ready` is None when a backend does not say what it has: the route is kept as
        it is, and the backend resolves the alias itself.
        """
        number = route.number
        if model is None or number is None or ready is None or is_number(route.selector):
            return route, False
        alias = alias_of(route, model)
        if number in ready:
            if alias:
                self._remember(model.name, alias, number)
            return replace(route, version=str(number), fallback=""), False
        stand_in = self._stand_in(model, alias, number, ready)
        if stand_in is None:
            # Not a stand-in: nothing comes after it to wait on, so it gets the whole wait.
            return route, False
        return replace(route, version=str(stand_in), fallback=""), True

    def _stand_in(
        self, model: ModelRoute, alias: str, number: int, ready: frozenset[int]
    ) -> int | None:
        """The version to serve meanwhile; None to send the alias itself, for the
        backends to resolve, when they have versions READY but none the route table
        knows as active: the table is behind them (its registry Watch was away while
        they followed a change), and the number it holds may be one they unloaded."""
        active = sorted(v for v in ready if v in model.versions and model.versions[v].active)
        if alias and ready and not active:
            return None
        if alias:
            before = self._serving.get((model.name, alias))
            if before is not None and before in ready:
                return before
            older = [v for v in active if v < number]
            return (older or active or [number])[-1]
        return (active or [number])[-1]

    def _remember(self, model: str, alias: str, number: int) -> None:
        key = (model, alias)
        if key not in self._serving and len(self._serving) >= self._limit:
            self._serving.clear()
        self._serving[key] = number


def first_wait(stand_in: bool) -> float | None:
    """How long the first try of a call waits for a backend with its version ready;
    None: the pool's ready wait.

    A stand-in is the version the backends had READY at the last catalog read while
    the one the route names was loading. When none has it any more (the rollout
    unloaded it), waiting for it cannot help: the call fails over at once to the
    catalogs read again, and goes to what is ready then, with the whole wait.
    """
    return 0.0 if stand_in else None
