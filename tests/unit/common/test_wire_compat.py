"""Our v2 proto is wire-compatible with the stubs that ship in tritonclient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("describe_protos.py")
ROOT = Path(__file__).resolve().parents[3]


def describe(*modules: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def test_every_message_field_and_method_matches_triton() -> None:
    ours = describe(
        "maas_proto.inference.grpc_predict_v2_pb2", "maas_proto.inference.model_config_pb2"
    )
    theirs = describe("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")
    assert len(ours) > 40
    mismatches = []
    for type_name, members in ours.items():
        if type_name not in theirs:
            mismatches.append(f"{type_name}: not in Triton's protocol")
            continue
        for member, spec in members.items():
            if theirs[type_name].get(member) != spec:
                mismatches.append(
                    f"{type_name}.{member}: ours {spec}, Triton's {theirs[type_name].get(member)}"
                )
    assert mismatches == []
    rpcs = ours["inference.GRPCInferenceService"]
    assert set(rpcs) == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
