"""The registry reaches its object store over TLS: an https endpoint, AWS_CA_BUNDLE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry.conftest import StartRegistry
from tests.s3server import SeaweedS3, seaweed_s3
from tests.tlscerts import Ca
from tests.unit.registry.registry_onnx import add_model, save


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeaweedS3, Ca]]:
    ca = Ca(tmp_path_factory.mktemp("s3-ca"))
    with seaweed_s3(ca.issue("s3")) as server:
        yield server, ca


@pytest.fixture
def https_env(tls_s3: tuple[SeaweedS3, Ca], monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS variables for the HTTPS endpoint; the new bucket's name."""
    server, _ = tls_s3
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    assert server.https_endpoint is not None
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.https_endpoint)
    return server.bucket()


async def test_upload_and_download_over_tls_with_the_ca_bundle(
    start_registry: StartRegistry,
    tls_s3: tuple[SeaweedS3, Ca],
    https_env: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls_s3[1].cert))
    registry = await start_registry(blob_url=f"s3://{https_env}/m", gc_interval_seconds=0)
    model = save(add_model(), tmp_path / "m.onnx")
    async with registry.client() as client:
        await client.upload("m", model)
        await client.download("m", "1", tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == model.read_bytes()
    assert registry.server.registry.blobs.kind == "s3"
    assert len(registry.server.registry.blobs.list()) == 1


async def test_an_untrusted_store_certificate_stops_the_start(
    start_registry: StartRegistry, https_env: str
) -> None:
    with pytest.raises(ValueError, match=f"cannot reach bucket '{https_env}' at https://.*SSL"):
        await start_registry(blob_url=f"s3://{https_env}/m")
