"""API key scopes, empty-name admission and the per-key stream cap, without gRPC."""

from __future__ import annotations

import pytest
import yaml
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import PermissionDenied, ResourceExhausted
from services.gateway.auth import KeyTable, StreamSlots, authorize, parse_keys
from services.gateway.scopes import ALL_SCOPES, METHOD_SCOPES, scope_of


def keys(text: str) -> KeyTable:
    return KeyTable(parse_keys(yaml.safe_load(text), source="keys.yaml"))


def test_a_key_without_scopes_has_them_all_and_a_listed_key_only_its_own() -> None:
    table = keys(
        "keys:\n"
        "  - {id: old, key: k-old}\n"
        "  - {id: infer, key: k-infer, scopes: [inference, metadata]}\n"
        "  - {id: none, key: k-none, scopes: []}\n"
    )
    old, infer, none = table.keys
    assert old.scopes == ALL_SCOPES == {"inference", "metadata", "statistics", "repository"}
    assert infer.scopes == {"inference", "metadata"}
    for method in METHOD_SCOPES:
        authorize(old, method)
    for method in ("ModelInfer", "ModelStreamInfer", "ModelMetadata", "ServerLive"):
        authorize(infer, method)
    for method, scope in (("ModelStatistics", "statistics"), ("RepositoryIndex", "repository")):
        with pytest.raises(PermissionDenied) as caught:
            authorize(infer, method)
        message = caught.value.message
        assert f"API key 'infer' lacks the '{scope}' scope that {method} needs" in message
        assert "its scopes: inference, metadata" in message
        assert "k-infer" not in message
    # Health stays open to any valid key, even one with no scope at all.
    authorize(none, "ServerLive")
    authorize(none, "ServerReady")
    with pytest.raises(PermissionDenied, match="its scopes: none"):
        authorize(none, "ServerMetadata")


def test_every_v2_method_has_an_entry_in_the_scope_table() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {m.name for m in service.methods} == set(METHOD_SCOPES)
    assert {s for s in METHOD_SCOPES.values() if s is not None} == ALL_SCOPES
    with pytest.raises(KeyError):
        scope_of("ModelTrain")


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ("inference", "scopes must be a list of scope names"),
        ("[inference, 3]", "scopes must be a list of scope names"),
        ("[inference, admin]", "unknown scope 'admin': expected one of inference, metadata"),
        (f"[{'x' * 500}]", "unknown scope 'xxxx"),
    ],
)
def test_bad_scopes_name_the_problem(scopes: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        keys(f"keys: [{{id: a, key: k, scopes: {scopes}}}]")
    assert "keys.yaml: keys[0]" in str(caught.value)
    assert len(str(caught.value)) < 200


async def test_a_key_with_an_allow_list_must_name_one_of_its_models() -> None:
    table = keys("keys: [{id: a, key: k, models: [pair]}, {id: any, key: j}]")
    limited, open_key = table.keys
    await table.admit(limited, "pair")
    with pytest.raises(PermissionDenied, match="API key 'a' may use only the models it lists"):
        await table.admit(limited, "")
    with pytest.raises(PermissionDenied, match=r"may not use model 'yyyy+'\.\.\.$"):
        await table.admit(limited, "y" * 10_000)
    await table.admit(open_key, "")
    assert limited.allows("pair") and not limited.allows("") and open_key.allows("anything")


def test_stream_slots_cap_each_key_and_free_a_slot_however_the_stream_ends() -> None:
    table = keys("keys: [{id: a, key: k}, {id: b, key: j}]")
    a, b = table.keys
    slots = StreamSlots(2)
    with slots.hold(a), slots.hold(a):
        assert slots.open("a") == 2
        with pytest.raises(ResourceExhausted) as caught, slots.hold(a):
            pass
        assert caught.value.message == (
            "API key 'a' has 2 ModelStreamInfer streams open: at most 2 at once "
            "(max_streams_per_key)"
        )
        with slots.hold(b):  # another key has its own slots
            assert slots.open("b") == 1
        with pytest.raises(RuntimeError), slots.hold(None):  # no auth: no per-key cap
            raise RuntimeError("a stream that failed")
    with pytest.raises(RuntimeError), slots.hold(a):
        raise RuntimeError("a stream that failed")
    assert slots.open("a") == 0 and not slots._open  # nothing left behind
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(0)
