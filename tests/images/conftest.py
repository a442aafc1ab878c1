"""The image tests (`make test-images`): they run the CPU image that make just built,
named by MAAS_TEST_IMAGE, with the Docker CLI named by DOCKER (default docker).

Like tests/interop they run in a pytest process of their own and never import
services.*: what they test is the image, reached over the network, and tritonclient
registers the same protobuf symbols as our stubs."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("MAAS_TEST_IMAGE")
    if not name:
        pytest.fail("MAAS_TEST_IMAGE is not set: run these tests through `make test-images`")
    return name


@pytest.fixture(scope="session")
def docker() -> str:
    binary = os.environ.get("DOCKER", "docker")
    if shutil.which(binary) is None:
        pytest.fail(f"{binary!r} is not on PATH")
    return binary
