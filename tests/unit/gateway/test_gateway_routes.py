"""The route cache: loaded from a snapshot, kept by watch events, resolving selectors."""

from __future__ import annotations

import pytest

from services.common.errors import NotFound
from services.gateway.routes import RouteTable
from services.registry.domain import (
    Event,
    EventType,
    Model,
    ModelSnapshot,
    Signature,
    Snapshot,
    Version,
    VersionState,
)


def version(
    number: int, *, archived: bool = False, labels: dict[str, str] | None = None
) -> Version:
    state = VersionState.ARCHIVED if archived else VersionState.ACTIVE
    return Version("digits", number, (), Signature(), state=state, labels=labels or {})


def snapshot(revision: int = 10) -> Snapshot:
    digits = Model("digits", labels={"team": "a"}, aliases={"production": 1})
    return Snapshot(
        revision, [ModelSnapshot(digits, [version(1), version(2), version(3, archived=True)])]
    )


def event(revision: int, kind: EventType, **fields: object) -> Event:
    return Event(revision, kind, **{"model": "digits", **fields})  # type: ignore[arg-type]


def test_resolves_numbers_aliases_latest_and_default() -> None:
    table = RouteTable()
    assert not table.loaded
    table.load(snapshot())
    assert table.loaded and table.revision == 10
    assert table.resolve("digits", "") == 1  # production
    assert table.resolve("digits", "latest") == 2  # 3 is archived
    assert table.resolve("digits", "3") == 3  # archived versions still resolve by number
    assert table.resolve("digits", "production") == 1
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        table.resolve("nope", "")
    with pytest.raises(NotFound, match="has no version 9"):
        table.resolve("digits", "9")
    with pytest.raises(NotFound, match="has no version 'blue'"):
        table.resolve("digits", "blue")


def test_events_move_aliases_and_versions() -> None:
    table = RouteTable()
    table.load(snapshot())
    assert not table.apply(event(11, EventType.ALIAS_MOVED, alias="production", version=2))
    assert table.resolve("digits", "") == 2
    assert table.apply(event(12, EventType.VERSION_ADDED, version=4))  # labels: re-read
    assert table.resolve("digits", "latest") == 4
    table.apply(event(13, EventType.VERSION_ARCHIVED, version=4))
    assert table.resolve("digits", "latest") == 2
    table.apply(event(14, EventType.ALIAS_SET, alias="canary", version=1))
    assert table.resolve("digits", "canary") == 1
    table.apply(event(15, EventType.ALIAS_DELETED, alias="production", previous_version=2))
    assert table.resolve("digits", "") == 2  # no production: the latest active
    table.apply(event(16, EventType.VERSION_DELETED, version=1))
    with pytest.raises(NotFound):
        table.resolve("digits", "1")
    table.apply(Event(17, EventType.BOOKMARK))
    assert table.revision == 17
    table.apply(event(18, EventType.MODEL_DELETED))
    assert "digits" not in table.models
    assert table.apply(event(19, EventType.MODEL_CREATED))
    with pytest.raises(NotFound, match="no active version"):
        table.resolve("digits", "")


def test_a_re_read_model_skips_the_events_it_already_reflects() -> None:
    table = RouteTable()
    table.load(snapshot())
    table.apply(event(11, EventType.VERSION_ADDED, version=4))
    # Re-read at revision 13: version 4 carries labels, and production moved at 12.
    fresh = Model("digits", labels={"maas.canary.weight": "5"}, aliases={"production": 4})
    reread = Snapshot(13, [ModelSnapshot(fresh, [version(1), version(4, labels={"x": "y"})])])
    table.replace_model("digits", reread)
    routes = table.models["digits"]
    assert routes.labels == {"maas.canary.weight": "5"}
    assert routes.versions[4].labels == {"x": "y"}
    # Late events at or below 13 change nothing; later ones apply.
    table.apply(event(12, EventType.ALIAS_MOVED, alias="production", version=2))
    assert table.resolve("digits", "") == 4
    table.apply(event(14, EventType.ALIAS_MOVED, alias="production", version=1))
    assert table.resolve("digits", "") == 1
    # An older re-read does not overwrite newer state; a re-read of nothing removes it.
    table.replace_model("digits", snapshot(revision=12))
    assert table.resolve("digits", "") == 1
    table.replace_model("digits", Snapshot(20, []))
    assert "digits" not in table.models


def test_new_models_and_versions_mark_the_route_stale_until_re_read() -> None:
    table = RouteTable()
    table.load(snapshot())
    assert not table.models["digits"].stale
    table.apply(event(11, EventType.ALIAS_MOVED, alias="production", version=2))
    assert not table.models["digits"].stale  # alias moves apply straight away
    table.apply(event(12, EventType.VERSION_ADDED, version=4))
    assert table.models["digits"].stale  # labels unknown: the next request re-reads
    fresh = Model("digits", aliases={"production": 4})
    table.replace_model("digits", Snapshot(12, [ModelSnapshot(fresh, [version(4)])]))
    assert not table.models["digits"].stale
    assert table.resolve("digits", "") == 4
    table.apply(Event(13, EventType.MODEL_CREATED, model="other"))
    assert table.models["other"].stale
