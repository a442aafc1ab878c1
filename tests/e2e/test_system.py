"""End to end: the system as `maas up` starts it, called through the gateway."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import System, run_printed_curl, start_system
from tests.interop.clients import pair_inputs


def digits_input(images: np.ndarray) -> list[tc.InferInput]:
    inp = tc.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    return [inp]


def test_output_says_how_to_call_it_and_that_auth_is_off(system: System) -> None:
    assert "auth: OFF" in system.output
    assert f'InferenceServerClient("{system.address("gateway")}")' in system.output
    assert "grpcurl -plaintext" in system.output
    # The printed curl line classifies over the gateway's REST port, as printed.
    (probabilities,) = run_printed_curl(system.output)["outputs"]  # type: ignore[misc]
    assert probabilities["name"] == "probabilities" and len(probabilities["data"]) == 10


def test_digits_classifies_held_out_digits_with_the_exported_accuracy(system: System) -> None:
    holdout = np.load(system.data / "models" / "digits" / "holdout.npz")
    images, labels = holdout["images"].astype(np.float32), holdout["labels"]
    client = tc.InferenceServerClient(system.address("gateway"))
    predicted = []
    for start in range(0, len(images), 32):
        result = client.infer("digits", digits_input(images[start : start + 32]))
        predicted.append(result.as_numpy("probabilities").argmax(axis=1))
    client.close()
    served = np.concatenate(predicted)
    session = ort.InferenceSession(str(system.data / "models" / "digits" / "model.onnx"))
    local = session.run(None, {"input": images})[0].argmax(axis=1)
    accuracy = float((served == labels).mean())
    assert (served == local).all()  # the same predictions as the exported file
    assert accuracy >= 0.95, accuracy


def register_pair(system: System, test_models: Path) -> None:
    """pair v1 as production, unless the registry has it already."""
    registry = ["--registry", system.address("registry")]
    if system.maas("models", *registry, "versions", "pair").returncode == 0:
        return
    model = str(test_models / "pair" / "1" / "model.onnx")
    result = system.maas("models", *registry, "register", "pair", model, "--alias", "production")
    assert result.returncode == 0, result.stderr


def test_a_registered_model_is_callable_within_seconds(system: System, test_models: Path) -> None:
    register_pair(system, test_models)
    client = tc.InferenceServerClient(system.address("gateway"))
    deadline = time.monotonic() + 20
    while True:
        try:
            out = client.infer("pair", pair_inputs(2.0)).as_numpy("sum")
            break
        except InferenceServerException:
            assert time.monotonic() < deadline, "the new model never became callable"
            time.sleep(0.2)
    client.close()
    np.testing.assert_array_equal(out, np.full((1, 4), 4.0, np.float32))


def test_canary_split_80_20(system: System, test_models: Path) -> None:
    registry = ["--registry", system.address("registry")]
    v2 = str(test_models / "pair_v2" / "1" / "model.onnx")
    register_pair(system, test_models)
    result = system.maas(
        "models",
        *registry,
        "register",
        "pair",
        v2,
        "--alias",
        "canary",
        "--label",
        "maas.canary.weight=20",
    )
    assert result.returncode == 0, result.stderr
    client = tc.InferenceServerClient(system.address("gateway"))
    time.sleep(2)  # the gateway learns of the new alias through the registry's watch
    versions = [
        client.infer("pair", pair_inputs(1.0)).get_response().model_version for _ in range(1000)
    ]
    client.close()
    share = versions.count("2") / len(versions)
    assert set(versions) == {"1", "2"}
    assert 0.15 <= share <= 0.25, share


def test_a_replica_killed_under_load_fails_no_request(system: System) -> None:
    stop = threading.Event()
    failures: list[str] = []
    done = [0]
    images = np.zeros((1, 1, 8, 8), np.float32)

    def load() -> None:
        client = tc.InferenceServerClient(system.address("gateway"))
        while not stop.is_set():
            try:
                client.infer("digits", digits_input(images))
                done[0] += 1
            except InferenceServerException as exc:
                failures.append(f"{exc.status()}: {exc.message()}")
        client.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = done[0]
    os.kill(system.pid("inference-2"), signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert failures == []
    assert before > 10 and done[0] > before + 10


@pytest.fixture(scope="module")
def auth_system(tmp_path_factory: pytest.TempPathFactory, demo_export: Path):  # type: ignore[no-untyped-def]
    """`maas up --auth` with a keys file of our own: open, allow-listed and rate-limited keys."""
    from services.common.tokens import hash_token

    tmp = tmp_path_factory.mktemp("auth")
    keys = tmp / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{id: open, sha256: {hash_token('open-key')}}}\n"
        f"  - {{id: only-pair, sha256: {hash_token('pair-key')}, models: [pair]}}\n"
        f"  - {{id: slow, sha256: {hash_token('slow-key')}, rate_per_second: 1, burst: 2}}\n"
    )
    running = start_system(tmp, demo_export, "--auth", "--api-keys-file", str(keys))
    yield running
    running.stop()


def test_auth_codes(auth_system: System) -> None:
    client = tc.InferenceServerClient(auth_system.address("gateway"))
    images = digits_input(np.zeros((1, 1, 8, 8), np.float32))

    def status(key: str | None) -> str:
        headers = {"authorization": f"Bearer {key}"} if key else None
        try:
            client.infer("digits", images, headers=headers)
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    assert "admin token" in auth_system.secrets
    assert status("open-key") == "OK"
    assert status(None) == "StatusCode.UNAUTHENTICATED"
    assert status("wrong-key") == "StatusCode.UNAUTHENTICATED"
    assert status("pair-key") == "StatusCode.PERMISSION_DENIED"
    codes = [status("slow-key") for _ in range(6)]
    assert codes[0] == "OK" and "StatusCode.RESOURCE_EXHAUSTED" in codes
    client.close()


def test_maas_infer_prints_the_predicted_digit(system: System, tmp_path: Path) -> None:
    from PIL import Image

    holdout = np.load(system.data / "models" / "digits" / "holdout.npz")
    image, label = holdout["images"][0], int(holdout["labels"][0])
    np.save(tmp_path / "digit.npy", image)
    # The same digit as a picture: dark ink on white, 8x8 scaled up.
    pixels = (255 - image[0] / 16.0 * 255).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(tmp_path / "digit.png")
    for name in ("digit.npy", "digit.png"):
        result = system.maas(
            "infer",
            "digits",
            "--input",
            str(tmp_path / name),
            "--gateway",
            system.address("gateway"),
        )
        assert result.returncode == 0, result.stderr
        assert f"class {label} (p=" in result.stdout, result.stdout
    missing = system.maas(
        "infer",
        "nope",
        "--input",
        str(tmp_path / "digit.npy"),
        "--gateway",
        system.address("gateway"),
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == "maas infer: NOT_FOUND: unknown model 'nope'"
