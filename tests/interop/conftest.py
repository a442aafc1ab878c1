"""Fixtures for driving real servers with clients nobody here wrote.

This suite runs in its own pytest process (see the Makefile): it imports
tritonclient, whose protobuf descriptors clash with our generated stubs, so it
talks only to servers in other processes and never imports services.*.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as tc

from tests.interop.clients import KEY
from tests.servers import ServiceProcess, hashed_key, keyed_gateway


@pytest.fixture(scope="module")
def inference(
    test_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The inference service on the shared test models, for a whole module."""
    workdir = tmp_path_factory.mktemp("inference")
    server = ServiceProcess("inference", ["--model-repository", str(test_models)], workdir)
    yield server
    server.stop()


@pytest.fixture
def client(inference: ServiceProcess) -> Iterator[tc.InferenceServerClient]:
    """tritonclient's standard gRPC client pointed at the inference service."""
    c = tc.InferenceServerClient(inference.address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gateway(
    test_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """An inference service on the test models, and a gateway with one API key in front."""
    workdir = tmp_path_factory.mktemp("gateway")
    with keyed_gateway(
        workdir,
        test_models,
        "keys:\n" + hashed_key("interop", KEY),
        inference_args=["--metrics-port", "0"],
        gateway_args=["--metrics-port", "0"],
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A registry without auth, for a whole module."""
    workdir = tmp_path_factory.mktemp("registry")
    server = ServiceProcess("registry", ["--data-dir", str(workdir / "data"), "--no-auth"], workdir)
    yield server
    server.stop()
