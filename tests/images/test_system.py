"""The system in containers of the CPU image (issue H): a registry, two inference
replicas and a gateway, each `--read-only --user 10001 --network host`.

digits goes in through the `maas` command line on the host; tritonclient, also on
the host, classifies the held-out digits through the gateway container. Then the
failures a cluster sees: `docker stop` (SIGTERM) of a replica under load must cost
no request, and `docker kill` of the registry must leave inference serving.

The tests share one system, in file order: the stop test leaves one replica, the
kill test needs only one (each also holds when run alone).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th

from tests.images.containers import ContainerSet, grpc_serving
from tests.images.load import INPUT, OUTPUT, Load, predict
from tests.images.system import (
    GRACE_SECONDS,
    MODEL,
    Digits,
    Service,
    System,
    digits_files,
    http_ok,
    maas,
    model_ready,
    start,
)

pytestmark = pytest.mark.timeout(300)
BATCH = 32  # the digits export's max_batch_size
LOAD_BEFORE, LOAD_AFTER = 100, 200  # requests answered before the stop, and after it returned


@pytest.fixture(scope="module")
def containers(request: pytest.FixtureRequest, docker: str, image: str) -> Iterator[ContainerSet]:
    """The module's containers; removed at the end, their logs shown first if a test failed."""
    containers = ContainerSet(docker, image)
    failed = request.session.testsfailed
    try:
        yield containers
    finally:
        if request.session.testsfailed > failed:
            show(request.config, "container logs", containers.logs())
        containers.close()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return digits_files(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def system(containers: ContainerSet, digits: Digits) -> System:
    """The running system, with digits registered and ready on every replica and the gateway."""
    system = start(containers)
    registry = ["--registry", system.registry.address]
    out = maas("models", "register", *registry, MODEL, str(digits.model), "--alias", "production")
    assert f"registered {MODEL} version 1" in out, out
    assert "ACTIVE" in maas("models", "versions", *registry, MODEL)
    for replica in system.inference:
        replica.container.wait_serving(
            f"{MODEL} 1 ready", partial(model_ready, replica.address, "1")
        )
    system.gateway.container.wait_serving(
        f"{MODEL} ready through it", lambda: model_ready(system.gateway.address, "production")
    )
    return system


def show(config: pytest.Config, title: str, text: str) -> None:
    """Write past pytest's output capture: the module's teardown may run in a test that passed."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        print(f"\n{f' {title} ':=^100}\n{text}", file=sys.stderr, flush=True)


@pytest.fixture
def gateway(system: System) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(system.gateway.address)
    yield client
    client.close()


def successes(address: str) -> int:
    """How many digits requests the v2 server at `address` answered (ModelStatistics)."""
    client = tc.InferenceServerClient(address)
    try:
        stats = client.get_inference_statistics(MODEL, "1")
    finally:
        client.close()
    return sum(s.inference_stats.success.count for s in stats.model_stats)


def lost_registry(replica: Service) -> bool:
    """Whether `replica` logged its registry client's UNAVAILABLE (its watch reconnecting)."""
    return any(
        r.get("logger") == "services.registry.client" and r.get("status") == "UNAVAILABLE"
        for r in replica.container.records()
    )


def test_gateway_container_classifies_the_held_out_digits(
    system: System, digits: Digits, gateway: tc.InferenceServerClient
) -> None:
    predicted = np.concatenate(
        [
            predict(gateway, digits.images[i : i + BATCH])
            for i in range(0, len(digits.labels), BATCH)
        ]
    )
    accuracy = float((predicted == digits.labels).mean())
    print(f"held-out accuracy through the gateway container: {accuracy:.4f} ({len(predicted)})")
    assert accuracy >= 0.95

    # The gateway's HTTP port answers tritonclient.http as its gRPC port does.
    http = th.InferenceServerClient(f"127.0.0.1:{system.http_port}")
    try:
        tensor = th.InferInput(INPUT, [BATCH, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(digits.images[:BATCH], binary_data=True)
        result = http.infer(MODEL, [tensor], outputs=[th.InferRequestedOutput(OUTPUT)])
    finally:
        http.close()
    probabilities = result.as_numpy(OUTPUT)
    assert probabilities is not None and probabilities.shape == (BATCH, 10)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), predicted[:BATCH])


def test_docker_stop_of_a_replica_under_load_fails_no_request(
    system: System, digits: Digits, gateway: tc.InferenceServerClient
) -> None:
    victim, survivor = system.inference[0], system.inference[1]
    image = digits.images[0]
    expected = int(predict(gateway, image[None])[0])
    served_before = successes(victim.address)

    load = Load(system.gateway.address, image, expected)
    try:
        load.wait_ok(LOAD_BEFORE)
        # The load reaches the victim, or its stop would prove nothing.
        assert successes(victim.address) > served_before
        victim.container.stop(grace=GRACE_SECONDS + 20)
        at_stop = load.ok
        load.wait_ok(at_stop + LOAD_AFTER)
    finally:
        load.stop()
    after = load.ok - at_stop
    print(
        f"docker stop under load: {at_stop} answered before the stop returned, "
        f"{after} after, {len(load.failures)} failed"
    )
    assert load.failures == []
    assert after >= LOAD_AFTER
    # It drained and exited on SIGTERM, not on the SIGKILL after the grace.
    assert victim.container.state() == "exited"
    assert victim.container.exit_code() == 0, victim.container.logs()
    assert grpc_serving(survivor.address)
    assert http_ok(system.http_port, "/v2/health/ready")


def test_docker_kill_of_the_registry_leaves_inference_serving(
    system: System, digits: Digits, gateway: tc.InferenceServerClient
) -> None:
    serving = [r for r in system.inference if r.container.state() == "running"]
    assert serving, "no inference replica is running"
    system.registry.container.kill()
    assert system.registry.container.state() == "exited"
    # Each replica has seen its registry watch fail before the requests below.
    for replica in serving:
        replica.container.wait_serving("losing its registry", partial(lost_registry, replica))
    images, labels = digits.images[:BATCH], digits.labels[:BATCH]
    baseline = None
    for _ in range(20):
        predicted = predict(gateway, images)
        baseline = predicted if baseline is None else baseline
        np.testing.assert_array_equal(predicted, baseline)
        assert all(grpc_serving(r.address) for r in serving)
        assert all(model_ready(r.address, "1") for r in serving)
    assert baseline is not None and float((baseline == labels).mean()) >= 0.9
    assert model_ready(system.gateway.address, "production")
