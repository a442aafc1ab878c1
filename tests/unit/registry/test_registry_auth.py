"""Tokens: hashing, the tokens file, and the role checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.tokens import hash_token
from services.registry.auth import Role, load_tokens, parse_tokens, registry_policy
from services.registry.settings import RegistrySettings


def test_hash_token_is_sha256_hex() -> None:
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_tokens_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        f"  - {{id: ci, role: admin, sha256: {hash_token('ci-secret').upper()}}}\n"
        "  - {id: dash, role: reader, token: dash-secret}\n"
    )
    settings = RegistrySettings(tokens_file=path, reader_token="env-read", data_dir=tmp_path)
    table = load_tokens(settings)
    assert len(table) == 3
    assert table.authenticate("ci-secret").id == "ci"  # type: ignore[union-attr]
    assert table.authenticate("dash-secret").role is Role.READER  # type: ignore[union-attr]
    assert table.authenticate("env-read").id == "env-reader"  # type: ignore[union-attr]
    assert table.authenticate("nope") is None
    assert "dash-secret" not in repr(table.authenticate("dash-secret"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a mapping with a 'tokens' list"),
        ({"tokens": [{"id": "x", "role": "root", "token": "t"}]}, "role must be 'admin' or"),
        ({"tokens": [{"id": "x", "role": "admin"}]}, "expected 'sha256'"),
        ({"tokens": [{"id": "x", "role": "admin", "sha256": "zz"}]}, "64 hex digits"),
    ],
)
def test_bad_tokens_file(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tokens(data, source="t.yaml")


def test_authorize_roles(tmp_path: Path) -> None:
    table = load_tokens(RegistrySettings(admin_token="adm", reader_token="rd", data_dir=tmp_path))
    assert table.authorize([("authorization", "Bearer adm")], Role.ADMIN).role is Role.ADMIN
    assert table.authorize([("authorization", "bearer rd")], Role.READER).role is Role.READER
    with pytest.raises(Unauthenticated, match="missing credentials"):
        table.authorize([], Role.READER)
    with pytest.raises(Unauthenticated, match="invalid token"):
        table.authorize([("authorization", "Bearer wrong")], Role.READER)
    with pytest.raises(Unauthenticated):
        table.authorize([("authorization", "Basic adm")], Role.READER)
    with pytest.raises(PermissionDenied, match="has role reader: expected admin"):
        table.authorize([("authorization", "Bearer rd")], Role.ADMIN)


def test_policy() -> None:
    prefix = "/maas.registry.v1.ModelRegistry/"
    assert registry_policy(prefix + "ListModels") is Role.READER
    assert registry_policy(prefix + "Watch") is Role.READER
    assert registry_policy(prefix + "UploadVersion") is Role.ADMIN
    assert registry_policy(prefix + "SomethingNew") is Role.ADMIN
    assert registry_policy("/grpc.health.v1.Health/Check") is None
