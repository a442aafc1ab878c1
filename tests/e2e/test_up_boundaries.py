"""`maas up --auth --api-keys-file`: no way around the gateway, and a banner that tells
the truth (issue B, items 8 and 9).

Before: inference listened on `[::]` and answered ModelInfer with no credential, so
the gateway's keys could be skipped; and the banner printed a generated API key that
the gateway, reading the given keys file instead, rejected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from services.common.tokens import hash_token
from tests.e2e.conftest import System, start_system

KEY = "boundaries-key"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(f"keys:\n  - {{id: mine, sha256: {hash_token(KEY)}}}\n")
    return path


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, demo_export: Path, keys_file: Path
) -> Iterator[System]:
    running = start_system(
        tmp_path_factory.mktemp("boundaries"),
        demo_export,
        "--auth",
        "--api-keys-file",
        str(keys_file),
    )
    yield running
    running.stop()


def infer_status(address: str, key: str | None) -> str:
    client = tc.InferenceServerClient(address)
    images = tc.InferInput("input", [1, 1, 8, 8], "FP32")
    images.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
    headers = {"authorization": f"Bearer {key}"} if key else None
    try:
        client.infer("digits", [images], headers=headers)
    except InferenceServerException as exc:
        return str(exc.status())
    finally:
        client.close()
    return "OK"


def listening(pid: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def test_the_banner_prints_no_key_and_names_the_keys_file(system: System, keys_file: Path) -> None:
    assert "API key (gateway)" not in system.output
    assert "API key" not in system.secrets
    assert f"the keys in {keys_file.resolve()}" in system.output
    assert "admin token (registry)" in system.output
    # The key the file holds is what works.
    assert infer_status(system.address("gateway"), KEY) == "OK"


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_registry_and_inference_listen_on_loopback_only(system: System) -> None:
    # gRPC and metrics ports alike (the metrics server may show as ::ffff:127.0.0.1).
    for name in ("registry", "inference"):
        addresses = listening(system.pid(name))
        assert addresses and all(loopback(ip) for ip in addresses), (name, addresses)
    assert not all(loopback(ip) for ip in listening(system.pid("gateway")))


def test_inference_wants_the_gateways_service_token(system: System) -> None:
    inference = f"127.0.0.1:{system.ports['inference']}"
    assert infer_status(inference, None) == "StatusCode.UNAUTHENTICATED"
    # An API key is the gateway's credential, not inference's.
    assert infer_status(inference, KEY) == "StatusCode.UNAUTHENTICATED"
    assert infer_status(inference, system.secrets["admin token"]) == "StatusCode.UNAUTHENTICATED"
