"""tritonclient helpers shared by the interop tests."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

# The API key the interop gateway accepts.
KEY = "interop-key"
HEADERS = {"authorization": f"Bearer {KEY}"}


def pair_inputs(value: float) -> list[tc.InferInput]:
    inputs = [tc.InferInput("a", [1, 4], "FP32"), tc.InferInput("b", [1, 4], "FP32")]
    for inp in inputs:
        inp.set_data_from_numpy(np.full((1, 4), value, np.float32))
    return inputs


class Loop:
    """A client thread that sends requests until stopped, counting the outcomes."""

    def __init__(self, address: str, model: str, version: str = "") -> None:
        self.ok = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, model, version))
        self._thread.start()

    def _run(self, address: str, model: str, version: str) -> None:
        client = tc.InferenceServerClient(address)
        while not self._stop.is_set():
            try:
                result = client.infer(model, pair_inputs(1.0), model_version=version)
                self.versions.add(result.get_response().model_version)
                self.ok += 1
            except InferenceServerException as exc:
                self.failures.append(f"{exc.status()}: {exc.message()}")
        client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
