"""Dynamic batching seen from tritonclient: many clients at once, each answer exactly
what ONNX Runtime gives for that request alone, and the statistics add up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tc

from tests.servers import ServiceProcess


def test_concurrent_clients_get_their_own_exact_rows(
    inference: ServiceProcess, test_models: Path
) -> None:
    rng = np.random.default_rng(11)
    images = [
        rng.uniform(0, 16, (int(rng.integers(1, 5)), 1, 8, 8)).astype(np.float32) for _ in range(96)
    ]
    session = ort.InferenceSession(str(test_models / "cnn" / "1" / "model.onnx"))
    expected = [session.run(None, {"input": x})[0] for x in images]

    before = _counts(inference.address)

    def send(batch: list[np.ndarray]) -> list[np.ndarray]:
        client = tc.InferenceServerClient(inference.address)
        out = []
        for x in batch:
            inp = tc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            out.append(client.infer("cnn", [inp]).as_numpy("probabilities"))
        client.close()
        return out

    chunks = [images[i::16] for i in range(16)]  # 16 clients in flight at once
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, chunks))
    for i, chunk_answers in enumerate(answers):
        for got, want in zip(chunk_answers, expected[i::16], strict=True):
            assert got.tobytes() == want.tobytes()

    inferences, executions = (
        a - b for a, b in zip(_counts(inference.address), before, strict=True)
    )
    assert inferences == sum(len(x) for x in images)
    assert executions <= len(images)


def _counts(address: str) -> tuple[int, int]:
    client = tc.InferenceServerClient(address)
    stats = client.get_inference_statistics("cnn").model_stats
    client.close()
    return sum(s.inference_count for s in stats), sum(s.execution_count for s in stats)
