"""What `maas up` starts: loopback for internal services, and who gets which credential
(issue B, items 8 and 9)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.common.tokens import hash_token
from tools.up_plan import (
    LOOPBACK,
    Secrets,
    gateway_args,
    inference_args,
    registry_args,
    secret_env,
)


def host_of(args: list[str]) -> str | None:
    return args[args.index("--host") + 1] if "--host" in args else None


def test_registry_and_inference_listen_on_loopback_only(tmp_path: Path) -> None:
    files = Secrets().write(tmp_path / "secrets")
    for auth in (None, files):
        assert host_of(registry_args(tmp_path, auth)) == LOOPBACK == "127.0.0.1"
        assert host_of(inference_args("127.0.0.1:1", tmp_path / "cache", auth)) == LOOPBACK
        # The gateway is the entry point: it keeps the default address.
        assert host_of(gateway_args("127.0.0.1:1", ["127.0.0.1:2"], auth)) is None


def test_with_auth_inference_takes_the_gateways_service_token(tmp_path: Path) -> None:
    creds = Secrets()
    files = creds.write(tmp_path / "secrets")
    args = inference_args("127.0.0.1:1", tmp_path / "cache", files)
    tokens = yaml.safe_load(Path(args[args.index("--service-tokens-file") + 1]).read_text())
    assert tokens == {"tokens": [{"id": "gateway", "sha256": hash_token(creds.service_token)}]}
    env = secret_env(creds)
    assert env["gateway"]["MAAS_GATEWAY_BACKEND_TOKEN"] == creds.service_token
    assert creds.service_token not in str(env["inference"]) + str(env["registry"])
    # Secrets travel in the environment, never on a command line.
    assert creds.service_token not in " ".join(args)


def test_without_auth_nobody_gets_a_token(tmp_path: Path) -> None:
    assert "--service-tokens-file" not in inference_args("h:1", tmp_path, None)
    assert "--no-auth" in registry_args(tmp_path, None)
    assert "--no-auth" in gateway_args("h:1", ["h:2"], None)
    assert secret_env(None) == {"registry": {}, "inference": {}, "gateway": {}}


def test_with_a_keys_file_no_key_is_generated_and_the_gateway_reads_that_file(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys: []\n")
    creds = Secrets.generate(str(keys))
    assert creds.api_key is None
    files = creds.write(tmp_path / "secrets")
    assert files.gateway_keys == keys.resolve()
    assert not (tmp_path / "secrets" / "gateway-keys.yaml").exists()
    args = gateway_args("h:1", ["h:2"], files)
    assert args[args.index("--api-keys-file") + 1] == str(keys.resolve())


def test_a_generated_key_is_the_one_the_gateway_checks(tmp_path: Path) -> None:
    creds = Secrets.generate(None)
    assert creds.api_key
    files = creds.write(tmp_path / "secrets")
    stored = yaml.safe_load(files.gateway_keys.read_text())
    assert stored == {"keys": [{"id": "local", "sha256": hash_token(creds.api_key)}]}
