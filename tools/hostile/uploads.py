"""Bad uploads to the registry (item 12): files no server should accept or half-keep.

Each is uploaded as a new model. After all of them, none that was refused may be
listed ("half-visible"); one that was accepted but cannot load is called through
the gateway, whose message must not name a server path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx.helper as oh
from onnx import TensorProto

from services.common.errors import ServiceError
from services.registry.client import RegistryClient
from services.registry.transfer import plan_upload
from tools.hostile.report import Category
from tools.hostile.system import HostileSystem
from tools.hostile.wire import INFER, Outcome, channel, unary
from tools.up import DEMO_MODEL

LOAD_WAIT_S = 15.0


def _custom_domain(path: Path) -> None:
    graph = oh.make_graph(
        [oh.make_node("Evil", ["x"], ["y"], domain="com.evil")],
        "evil",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid("com.evil", 1)]
    onnx.save(oh.make_model(graph, opset_imports=opsets, ir_version=8), str(path))


def _unknown_op(path: Path) -> None:
    graph = oh.make_graph(
        [oh.make_node("NoSuchOp", ["x"], ["y"])],
        "unknown",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(
        oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), str(path)
    )


def bad_files(digits: Path) -> dict[str, Callable[[Path], None]]:
    """name -> writer of model.onnx at a path."""
    data = digits.read_bytes()
    return {
        "custom op domain com.evil": _custom_domain,
        "unknown op": _unknown_op,
        "truncated to half": lambda p: p.write_bytes(data[: len(data) // 2]),
        "truncated to 16 bytes": lambda p: p.write_bytes(data[:16]),
        "empty file": lambda p: p.write_bytes(b""),
        "not ONNX": lambda p: p.write_bytes(b"hello, registry\n" * 64),
        "one flipped byte": lambda p: p.write_bytes(
            data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        ),
        "protobuf of another kind": lambda p: p.write_bytes(b"\x0a\x06digits\x12\x01x"),
    }


async def run_uploads(system: HostileSystem, category: Category) -> None:
    """Upload each bad file; check what stays listed and what an accepted one says."""
    folder = system.data / "hostile-uploads"
    paths = system.server_paths()
    digits = system.data / "models" / DEMO_MODEL / "model.onnx"
    accepted: list[str] = []
    refused: list[str] = []
    async with RegistryClient(system.address("registry"), system.admin_token) as client:
        for i, (label, write) in enumerate(bad_files(digits).items()):
            name = f"bad-upload-{i}"
            path = folder / name / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
            try:
                await client.upload_files(name, plan_upload(path), alias="production")
            except ServiceError as exc:
                category.record(f"upload: {label}", Outcome(exc.status, exc.message), paths)
                refused.append(name)
            else:
                category.record(f"upload: {label}", Outcome("OK"), paths)
                accepted.append(name)
        listed = {m.name for m in (await client.list_models()).items}
    category.figures["accepted"] = accepted
    category.figures["half_visible"] = sorted(set(refused) & listed)
    await _call_accepted(system, category, accepted)


async def _call_accepted(system: HostileSystem, category: Category, names: list[str]) -> None:
    """Each accepted bad model called through the gateway until it stops being NOT_FOUND."""
    from tools.hostile.requests import other_request

    paths = system.server_paths()
    async with channel(system.address("gateway")) as chan:
        for name in names:
            request = other_request()
            request.model_name = name
            payload = request.SerializeToString()
            outcome = Outcome("NOT_FOUND")
            deadline = asyncio.get_running_loop().time() + LOAD_WAIT_S
            while asyncio.get_running_loop().time() < deadline:
                outcome = await unary(chan, INFER, payload, system.client_metadata(), 5.0)
                if (
                    outcome.code not in {"NOT_FOUND", "UNAVAILABLE"}
                    or "fail" in outcome.message.lower()
                ):
                    break
                await asyncio.sleep(0.5)
            category.record(f"gateway: ModelInfer {name}", outcome, paths)
            index = await unary(chan, "RepositoryIndex", b"", system.client_metadata(), 5.0)
            category.record("gateway: RepositoryIndex", index, paths)
            _check_index(category, index, paths)


def _check_index(category: Category, index: Outcome, paths: list[str]) -> None:
    """RepositoryIndex reasons are client-visible messages too."""
    from maas_proto.inference import grpc_predict_v2_pb2 as pb

    if not index.ok:
        return
    for model in pb.RepositoryIndexResponse.FromString(index.body).models:
        if model.reason:
            reason = Outcome("OK", model.reason)
            category.inspect(f"RepositoryIndex reason of {model.name}", reason, paths)
