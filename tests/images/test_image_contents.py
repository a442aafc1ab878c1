"""What the built CPU image holds, asked of the image itself (the Dockerfile's text is
checked in tests/deploy/test_dockerfiles.py; this checks what the build produced): no
torch, no grpcio-tools, no compiler, and CPU ONNX Runtime alone, never beside the GPU
wheel."""

from __future__ import annotations

import json
import subprocess
import uuid

# Run by the image's own python: the modules and programs it finds, as one JSON line.
PROBE = """
import importlib.metadata as md, importlib.util as u, json, shutil
dists = {d.metadata["Name"].lower() for d in md.distributions()}
print(json.dumps({
    "modules": [m for m in ("torch", "grpc_tools", "torchvision") if u.find_spec(m)],
    "programs": [p for p in ("gcc", "cc", "g++", "c++", "clang", "make") if shutil.which(p)],
    "dists": sorted(d for d in dists if d.startswith("onnxruntime")),
    "onnxruntime": u.find_spec("onnxruntime") is not None,
}))
"""


def test_the_runtime_image_holds_no_build_tools_and_one_onnxruntime(
    docker: str, image: str
) -> None:
    name = f"maas-image-contents-{uuid.uuid4().hex[:12]}"
    done = subprocess.run(
        [docker, "run", "--rm", "--name", name, "--network", "host", "--read-only",
         "--entrypoint", "python", image, "-c", PROBE],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["modules"] == [], f"the runtime image imports {found['modules']}"
    assert found["programs"] == [], f"the runtime image has {found['programs']} on PATH"
    assert found["onnxruntime"], "the runtime image cannot import onnxruntime"
    assert found["dists"] == ["onnxruntime"], f"ONNX Runtime wheels: {found['dists']}"
