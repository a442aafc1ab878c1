"""Rows to domain objects and back: JSON columns and microsecond timestamps."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from services.registry.domain import (
    Event,
    EventType,
    FileInfo,
    Model,
    Signature,
    TensorSpec,
    Version,
    VersionState,
)

Row = tuple[Any, ...]

MODEL_COLUMNS = "name, description, labels, create_time"
VERSION_COLUMNS = (
    "model, version, description, labels, state, config, signature, opset, ir_version, create_time"
)
EVENT_COLUMNS = "revision, type, model, version, alias, previous_version, time"


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch."""
    return int(when.timestamp() * 1_000_000)


def from_micros(micros: int) -> datetime:
    """A UTC datetime from microseconds since the epoch."""
    return datetime.fromtimestamp(int(micros) / 1_000_000, UTC)


def dump_labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def dump_signature(signature: Signature) -> str:
    def spec(t: TensorSpec) -> dict[str, Any]:
        return {
            "name": t.name,
            "datatype": t.datatype,
            "shape": list(t.shape),
            "unknown_rank": t.unknown_rank,
        }

    return json.dumps(
        {
            "inputs": [spec(t) for t in signature.inputs],
            "outputs": [spec(t) for t in signature.outputs],
        }
    )


def load_signature(text: str) -> Signature:
    data = json.loads(text)

    def spec(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(d["name"], d["datatype"], tuple(d["shape"]), bool(d.get("unknown_rank")))

    return Signature(
        tuple(spec(d) for d in data.get("inputs", ())),
        tuple(spec(d) for d in data.get("outputs", ())),
    )


def model_from_row(row: Row, latest: int | None, aliases: dict[str, int]) -> Model:
    """A Model from a MODEL_COLUMNS row."""
    name, description, labels, create_time = row
    return Model(
        name=name,
        description=description,
        labels=json.loads(labels),
        create_time=from_micros(create_time),
        latest_version=int(latest or 0),
        aliases=dict(sorted(aliases.items())),
    )


def version_from_row(row: Row, files: Sequence[FileInfo], aliases: Iterable[str]) -> Version:
    """A Version from a VERSION_COLUMNS row, its files and the aliases at it."""
    model, number, description, labels, state, config, signature, opset, ir, created = row
    return Version(
        model=model,
        version=int(number),
        files=tuple(sorted(files, key=lambda f: f.path)),
        signature=load_signature(signature),
        state=VersionState(state),
        description=description,
        labels=json.loads(labels),
        config=config,
        aliases=tuple(sorted(aliases)),
        create_time=from_micros(created),
        opset=int(opset),
        ir_version=int(ir),
    )


def event_from_row(row: Row) -> Event:
    """An Event from an EVENT_COLUMNS row."""
    revision, kind, model, version, alias, previous, when = row
    return Event(
        revision=int(revision),
        type=EventType(kind),
        model=model,
        version=int(version),
        alias=alias,
        previous_version=int(previous),
        time=from_micros(when),
    )
