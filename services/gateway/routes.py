"""The gateway's copy of the registry: versions and aliases per model, kept by events.

It is loaded from a snapshot and kept fresh by the Watch feed, so resolving a
request's version does not cost a registry round-trip. Alias moves, archives and
deletions apply straight from their events. A new model or version marks the
model stale instead (events do not carry labels, which canary weights live in),
and the next request for it re-reads that one model (a cache miss). Events at or
below the revision a model was read at are skipped for it, so nothing is applied
twice or out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.errors import NotFound
from services.common.versions import parse_number
from services.registry.domain import Event, EventType, ModelSnapshot, Snapshot, VersionState

PRODUCTION = "production"
LATEST = "latest"


@dataclass
class VersionRoute:
    """One version: whether it may resolve as latest, and its labels."""

    active: bool = True
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelRoute:
    """One model's versions, aliases and labels."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    versions: dict[int, VersionRoute] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    # Events at or below this revision are already reflected.
    revision: int = 0
    # A new model or version arrived: re-read before the next request resolves.
    stale: bool = False

    def latest(self) -> int | None:
        """The highest active version."""
        active = [n for n, v in self.versions.items() if v.active]
        return max(active) if active else None

    def resolve(self, selector: str) -> int:
        """The version a number, an alias, "latest" or "" (production, else latest) names."""
        number = parse_number(selector)
        if number is not None:
            if number not in self.versions:
                raise NotFound(f"model '{self.name}' has no version {number}")
            return number
        if selector in ("", LATEST):
            found = self.aliases.get(PRODUCTION) if not selector else None
            found = found if found is not None else self.latest()
            if found is None:
                raise NotFound(f"model '{self.name}' has no active version")
            return found
        found = self.aliases.get(selector)
        if found is None:
            raise NotFound(
                f"model '{self.name}' has no version '{selector}': "
                "expected a version number, an alias or 'latest'"
            )
        return found


def model_route(snapshot: ModelSnapshot, revision: int) -> ModelRoute:
    """A model's routes from its snapshot read at `revision`."""
    return ModelRoute(
        name=snapshot.model.name,
        labels=dict(snapshot.model.labels),
        versions={
            v.version: VersionRoute(v.state is VersionState.ACTIVE, dict(v.labels))
            for v in snapshot.versions
        },
        aliases=dict(snapshot.model.aliases),
        revision=revision,
    )


class RouteTable:
    """Every model's routes; `loaded` once a snapshot was applied."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRoute] = {}
        self.revision = 0
        self.loaded = False

    def load(self, snapshot: Snapshot) -> None:
        """Replace everything with a snapshot."""
        self.models = {m.model.name: model_route(m, snapshot.revision) for m in snapshot.models}
        self.revision = snapshot.revision
        self.loaded = True

    def replace_model(self, name: str, snapshot: Snapshot) -> None:
        """Replace one model with a snapshot of it (read at a revision of its own)."""
        found = [m for m in snapshot.models if m.model.name == name]
        current = self.models.get(name)
        if current is not None and current.revision >= snapshot.revision and not current.stale:
            return
        if found:
            self.models[name] = model_route(found[0], snapshot.revision)
        else:
            self.models.pop(name, None)

    def apply(self, event: Event) -> bool:
        """Apply one change; True when it left the model stale (to re-read on demand)."""
        self.revision = max(self.revision, event.revision)
        if event.type in (EventType.BOOKMARK, EventType.RESYNC):
            return False
        model = self.models.get(event.model)
        if model is not None and event.revision <= model.revision:
            return False
        if event.type is EventType.MODEL_DELETED:
            self.models.pop(event.model, None)
            return False
        if model is None:
            model = self.models[event.model] = ModelRoute(event.model, stale=True)
        model.revision = event.revision
        kind = event.type
        if kind is EventType.MODEL_CREATED:
            model.stale = True
            return True
        if kind is EventType.VERSION_ADDED:
            model.versions[event.version] = VersionRoute(active=True)
            model.stale = True
            return True
        if kind is EventType.VERSION_ARCHIVED:
            model.versions.setdefault(event.version, VersionRoute()).active = False
        elif kind is EventType.VERSION_DELETED:
            model.versions.pop(event.version, None)
        elif kind in (EventType.ALIAS_SET, EventType.ALIAS_MOVED):
            model.aliases[event.alias] = event.version
        elif kind is EventType.ALIAS_DELETED:
            model.aliases.pop(event.alias, None)
        return False

    def get(self, name: str) -> ModelRoute:
        """A model's routes; NotFound when the registry has no such model."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'")
        return model

    def resolve(self, name: str, selector: str) -> int:
        """The version number a request's model and version selector name."""
        return self.get(name).resolve(selector)
