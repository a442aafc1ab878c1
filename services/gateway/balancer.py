"""Per-request backend choice, and the ejection of backends that fail.

Plain state and arithmetic, no I/O: the pool (services.gateway.pool) owns the
channels and the health probes and calls into this.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common.versions import is_number


class Health(enum.Enum):
    """Whether a backend takes traffic."""

    # New, or back from an ejection: one health Check must pass first.
    PROBING = "PROBING"
    HEALTHY = "HEALTHY"
    EJECTED = "EJECTED"


@dataclass
class BackendState:
    """One backend's load and health."""

    address: str
    inflight: int = 0
    health: Health = Health.PROBING
    # Ejections since the last successful request; sets the next backoff.
    failures: int = 0
    ejected_until: float = 0.0
    # Requests answered, for tests and metrics.
    served: int = 0
    # What the backend has, from its RepositoryIndex and per-model health: the READY
    # versions of each model, and every model it knows with its versions in any state.
    # None: it does not say (no RepositoryIndex), so it is asked about any model.
    ready: dict[str, frozenset[int]] | None = None
    known: dict[str, frozenset[str]] | None = None
    # When the catalog was last read, and whether a new read is wanted.
    catalog_at: float = float("-inf")
    catalog_wanted: bool = False
    # Ejected because its connection failed: probed as soon as the channel connects
    # again (a restarted replica), not only when the backoff runs out.
    reconnecting: bool = False

    def serves(self, model: str, version: int | None) -> bool:
        """Whether this backend has `model` (that version, or any) READY, as far as known."""
        if self.ready is None or not model:
            return True
        versions = self.ready.get(model)
        if not versions:
            return False
        return version is None or version in versions

    def catalog(self, rows: Sequence[tuple[str, str, str]], now: float) -> None:
        """Replace what is known from RepositoryIndex rows (name, version, state)."""
        ready: dict[str, set[int]] = {}
        for name, version, state in rows:
            if state == "READY" and is_number(version):
                ready.setdefault(name, set()).add(int(version))
        self.ready = {name: frozenset(versions) for name, versions in ready.items()}
        known: dict[str, set[str]] = {}
        for name, version, _ in rows:
            known.setdefault(name, set()).add(version)
        self.known = {name: frozenset(versions) for name, versions in known.items()}
        self.catalog_at, self.catalog_wanted = now, False

    def unready(self, model: str, version: int | None) -> None:
        """The backend said (by health or by an answer) that a model, or one version, is
        not ready; its next catalog read may say otherwise."""
        if self.ready is None or model not in self.ready:
            return
        if version is None:
            del self.ready[model]
        else:
            self.ready[model] = self.ready[model] - {version}
        self.catalog_wanted = True

    def eject(self, now: float, base: float, cap: float) -> float:
        """Take the backend out of rotation; the backoff doubles per consecutive ejection."""
        self.failures += 1
        backoff = min(base * 2 ** (self.failures - 1), cap)
        self.health = Health.EJECTED
        self.ejected_until = now + backoff
        return backoff

    def probe_due(self, now: float) -> bool:
        """Whether a health Check should run now."""
        if self.health is Health.PROBING:
            return True
        return self.health is Health.EJECTED and now >= self.ejected_until

    def probed(self, serving: bool, now: float, base: float, cap: float) -> None:
        """Record a health Check: serving backends take traffic again."""
        if serving:
            self.health = Health.HEALTHY
        else:
            self.eject(now, base, cap)

    def succeeded(self) -> None:
        """A request went through: the next ejection starts from the base backoff."""
        self.failures = 0
        self.served += 1


Rng = random.Random
Picker = Callable[[Sequence[BackendState], Rng], BackendState]


def least_loaded(candidates: Sequence[BackendState], rng: Rng) -> BackendState:
    """The backend with the fewest requests in flight; ties broken at random."""
    fewest = min(c.inflight for c in candidates)
    return rng.choice([c for c in candidates if c.inflight == fewest])


def power_of_two(candidates: Sequence[BackendState], rng: Rng) -> BackendState:
    """The less loaded of two backends drawn at random (Mitzenmacher's p2c)."""
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(list(candidates), 2)
    return b if b.inflight < a.inflight else a


# The balancer names settings and flags accept; the first is the default.
PICKERS: dict[str, Picker] = {"least_loaded": least_loaded, "p2c": power_of_two}
DEFAULT_PICKER = next(iter(PICKERS))


def choose(
    backends: Sequence[BackendState],
    exclude: set[str],
    pick: Picker,
    rng: Rng,
    model: str = "",
    version: int | None = None,
) -> BackendState | None:
    """A healthy backend with the model (version) ready, not in `exclude` (or any such
    one if all were excluded)."""
    healthy = [b for b in backends if b.health is Health.HEALTHY and b.serves(model, version)]
    fresh = [b for b in healthy if b.address not in exclude]
    pool = fresh or healthy
    return pick(pool, rng) if pool else None
