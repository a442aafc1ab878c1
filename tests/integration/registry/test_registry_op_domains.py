"""Uploads with ops in domains ONNX Runtime does not register are refused (issue B, item 12).

Such a model passes the ONNX checker, but inference cannot load it, and the load
error it then reported named a server path. The registry now refuses it at upload,
naming the node, op and domain, and the domains it expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from services.common.errors import InvalidArgument
from services.registry.client import RegistryClient
from services.registry.validation import RUNTIME_DOMAINS
from tests.unit.registry.registry_onnx import IR_VERSION, save


def one_node(
    node: onnx.NodeProto,
    domains: Sequence[str] = (),
    functions: Sequence[onnx.FunctionProto] = (),
) -> onnx.ModelProto:
    """Y = node(X), importing opset 17 and version 1 of each of `domains`."""
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
    )
    imports = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(
        graph, opset_imports=imports, ir_version=IR_VERSION, functions=list(functions)
    )


def evil() -> onnx.ModelProto:
    return one_node(
        helper.make_node("Evil", ["X"], ["Y"], name="bad", domain="com.evil"), ["com.evil"]
    )


def evil_in_subgraph() -> onnx.ModelProto:
    """The custom op hides in an If's branch."""

    def branch(name: str) -> onnx.GraphProto:
        node = helper.make_node("Evil", ["X"], [name], name="hidden", domain="com.evil")
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4])
        return helper.make_graph([node], name, [], [out])

    cond = helper.make_node(
        "Constant", [], ["C"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
    )
    choose = helper.make_node(
        "If", ["C"], ["Y"], then_branch=branch("then_y"), else_branch=branch("else_y")
    )
    model = one_node(choose, ["com.evil"])
    model.graph.node.insert(0, cond)
    return model


async def upload(admin: RegistryClient, model: onnx.ModelProto, tmp_path: Path) -> None:
    await admin.upload("m", save(model, tmp_path / "up" / "model.onnx"))


@pytest.mark.parametrize("build", [evil, evil_in_subgraph], ids=["graph", "subgraph"])
async def test_custom_domain_is_refused_naming_node_op_and_domain(
    admin: RegistryClient, tmp_path: Path, build: object
) -> None:
    model = build()  # type: ignore[operator]
    onnx.checker.check_model(model, full_check=True)  # the checker alone lets it through
    with pytest.raises(InvalidArgument) as info:
        await upload(admin, model, tmp_path)
    message = info.value.message
    assert "'com.evil':'Evil'" in message, message
    assert "ONNX Runtime does not register" in message, message
    assert str(list(RUNTIME_DOMAINS)) in message, message
    assert str(tmp_path) not in message
    assert (await admin.list_models()).items == []


@pytest.mark.parametrize(
    ("domain", "op", "imports", "attributes"),
    [
        ("", "Relu", [], {}),
        ("ai.onnx.ml", "Normalizer", ["ai.onnx.ml"], {"norm": "L2"}),
        ("com.microsoft", "Gelu", ["com.microsoft"], {}),
    ],
)
async def test_standard_domains_are_accepted(
    admin: RegistryClient,
    tmp_path: Path,
    domain: str,
    op: str,
    imports: list[str],
    attributes: dict[str, str],
) -> None:
    node = helper.make_node(op, ["X"], ["Y"], domain=domain, **attributes)
    model = one_node(node, imports)
    version = await admin.upload("m", save(model, tmp_path / "up" / "model.onnx"))
    assert version.version == 1


async def test_a_function_the_model_defines_is_accepted(
    admin: RegistryClient, tmp_path: Path
) -> None:
    body = [helper.make_node("Identity", ["A"], ["B"])]
    function = helper.make_function(
        "com.evil", "Evil", ["A"], ["B"], body, [helper.make_opsetid("", 17)]
    )
    model = one_node(
        helper.make_node("Evil", ["X"], ["Y"], domain="com.evil"), ["com.evil"], [function]
    )
    version = await admin.upload("m", save(model, tmp_path / "up" / "model.onnx"))
    assert version.version == 1
