"""Loading and unloading at runtime, broken models, and graceful SIGTERM."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from tests.interop.clients import Loop, pair_inputs
from tests.servers import ServiceProcess


def test_load_and_unload_while_requests_flow(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repository("pair", "cnn")
    server = ServiceProcess("inference", ["--model-repository", str(repo)], tmp_path)
    client = tc.InferenceServerClient(server.address)
    loop = Loop(server.address, "pair")
    try:
        for _ in range(3):  # another model comes and goes
            client.unload_model("cnn")
            assert not client.is_model_ready("cnn")
            with pytest.raises(InferenceServerException) as caught:
                client.infer("cnn", [])
            assert caught.value.status() == "StatusCode.UNAVAILABLE"
            client.load_model("cnn")
            assert client.is_model_ready("cnn")
        # A new version of the model under load appears: it loads and warms up,
        # then takes the traffic that names no version.
        shutil.copytree(repo / "pair" / "1", repo / "pair" / "2")
        client.load_model("pair")
        assert client.is_model_ready("pair", "2")
        time.sleep(0.3)
        # The old version goes away while requests flow.
        shutil.rmtree(repo / "pair" / "1")
        client.load_model("pair")
        assert not client.is_model_ready("pair", "1")
        time.sleep(0.3)
    finally:
        loop.stop()
        client.close()
        server.stop()
    assert loop.failures == []
    assert loop.ok > 20
    assert loop.versions == {"1", "2"}


def test_broken_files_do_not_stop_the_server(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repository("pair")
    (repo / "garbage" / "1").mkdir(parents=True)
    (repo / "garbage" / "1" / "model.onnx").write_bytes(b"not a model")
    (repo / "empty" / "1").mkdir(parents=True)
    (repo / "badconfig" / "1").mkdir(parents=True)
    shutil.copy(repo / "pair" / "1" / "model.onnx", repo / "badconfig" / "1" / "model.onnx")
    (repo / "badconfig" / "config.yaml").write_text("instances: -3\n")
    server = ServiceProcess("inference", ["--model-repository", str(repo)], tmp_path)
    client = tc.InferenceServerClient(server.address)
    try:
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["pair"].state == "READY"
        assert (
            index["garbage"].state == "UNAVAILABLE" and "could not load" in index["garbage"].reason
        )
        assert index["empty"].state == "UNAVAILABLE" and "model.onnx" in index["empty"].reason
        assert "instances" in index["badconfig"].reason
        assert client.is_model_ready("pair") and not client.is_model_ready("garbage")
        with pytest.raises(InferenceServerException) as caught:
            client.infer("garbage", pair_inputs(1.0))
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("garbage")
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "garbage" in caught.value.message()
        client.infer("pair", pair_inputs(2.0))
    finally:
        client.close()
        server.stop()


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    make_repository: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repository("slow")
    # 512-row requests: max_batch_size is also the most rows a request may send.
    config = "dynamic_batching: {enabled: false, max_batch_size: 512}\n"
    (repo / "slow" / "config.yaml").write_text(config)
    server = ServiceProcess("inference", ["--model-repository", str(repo)], tmp_path)
    client = tc.InferenceServerClient(server.address)
    # About 0.2 s of matrix work each on two cores: several are queued or running
    # when SIGTERM arrives.
    x = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    count = 8
    done: list[tuple[object, object]] = []
    first, finished = threading.Event(), threading.Event()

    def callback(result: object, error: object) -> None:
        done.append((result, error))
        first.set()
        if len(done) == count:
            finished.set()

    for _ in range(count):
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.async_infer("slow", [inp], callback)
    # One instance runs them one at a time: when the first answer arrives, the
    # other seven (about 1.4 s of work) are still queued or running.
    assert first.wait(60), "no request completed"
    server.terminate()
    in_flight_at_sigterm = count - len(done)
    refused = tc.InferenceServerClient(server.address)
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        try:
            refused.is_server_live()
        except InferenceServerException as exc:
            status = str(exc.status())
            break
    # A call already on its way when the drain began may be cancelled instead.
    assert status in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")
    # Once the drain has begun, a new connection is refused outright.
    fresh = tc.InferenceServerClient(server.address)
    with pytest.raises(InferenceServerException) as caught:
        fresh.is_server_live()
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    fresh.close()
    assert finished.wait(60), "in-flight requests did not complete"
    assert server.wait(60) == 0
    assert in_flight_at_sigterm > 0
    assert [e for _, e in done if e is not None] == []
    assert len(done) == count
    client.close()
    refused.close()
    server.stop()
