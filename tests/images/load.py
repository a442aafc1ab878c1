"""A bounded client load through the gateway, in threads of tritonclient.grpc.

Each request is checked (the class predicted for a fixed image, which the test
knows beforehand), and every outcome is counted under one condition variable, so
that the test waits on counts ("N more answered") instead of sleeping.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import tritonclient.grpc as tc

from tests.images.system import MODEL

INPUT, OUTPUT = "input", "probabilities"


def digits_input(images: np.ndarray) -> list[tc.InferInput]:
    tensor = tc.InferInput(INPUT, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return [tensor]


def predict(client: tc.InferenceServerClient, images: np.ndarray) -> np.ndarray:
    """The class the model finds most probable for each image."""
    result = client.infer(MODEL, digits_input(images), timeout=30)
    probabilities = result.as_numpy(OUTPUT)
    assert probabilities is not None and probabilities.shape == (len(images), 10)
    return np.asarray(probabilities.argmax(axis=1))


class Load:
    """`threads` clients sending one image each, over and over, until `stop()`."""

    def __init__(self, address: str, image: np.ndarray, expected: int, threads: int = 4) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(address, image, expected), daemon=True)
            for _ in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, address: str, image: np.ndarray, expected: int) -> None:
        client = tc.InferenceServerClient(address)
        try:
            while not self._stop.is_set():
                try:
                    got = int(predict(client, image[None])[0])
                    failure = None if got == expected else f"class {got}, expected {expected}"
                except Exception as exc:  # noqa: BLE001 - every kind of failure counts
                    failure = f"{type(exc).__name__}: {exc}"
                with self._changed:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(failure)
                    self._changed.notify_all()
        finally:
            client.close()

    def wait_ok(self, count: int, timeout: float = 60.0) -> None:
        """Block until `count` requests in all have been answered correctly."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.ok < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{self.ok} of {count} answered, failures: {self.failures[:5]}"
                self._changed.wait(left)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
