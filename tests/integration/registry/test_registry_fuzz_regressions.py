"""Registry crashes the fuzz suite found, sent to a real registry: INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import pytest
from maas_proto.registry.v1 import registry_pb2 as pb
from maas_proto.registry.v1 import registry_pb2_grpc

from services.registry import names
from tests.integration.registry.conftest import Running
from tests.integration.registry.test_registry_rejections import AUTH, rejected
from tests.unit.registry.registry_onnx import add_model, external_reference


async def test_element_type_outside_the_enum_is_rejected(registry: Running) -> None:
    model = add_model(17)
    model.graph.node[0].domain = "com.evil"
    model.opset_import.add(domain="com.evil", version=1)
    model.graph.input[0].type.tensor_type.elem_type = -1
    await rejected(registry, "element type -1 has no KServe v2", model.SerializeToString())


async def test_external_data_location_that_is_not_utf8_is_rejected(registry: Running) -> None:
    data = external_reference("LOCX").replace(b"LOCX", b"\xf4\x90\x80\x80")
    await rejected(registry, "external data entries must be UTF-8", data)


@pytest.mark.parametrize("version", ["²", "1" * 5000, "01"])
async def test_version_selectors_outside_ascii_decimals_are_rejected(
    registry: Running, version: str
) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ResolveVersion(
                pb.ResolveVersionRequest(model="m", version=version), metadata=AUTH
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected a version number in ASCII digits" in (caught.value.details() or "")


@pytest.mark.parametrize("after", ["²", "01", "x"])
async def test_versions_page_token_that_names_no_version_is_rejected(
    registry: Running, after: str
) -> None:
    # A versions token continues after a version number; '²' passed str.isdigit() and
    # int() raised ValueError (INTERNAL). Found by reading the code, not by the fuzzer.
    token = names.encode_page_token("versions", after)
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.ModelRegistryStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListVersions(
                pb.ListVersionsRequest(model="m", page_token=token), metadata=AUTH
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (caught.value.details() or "")
