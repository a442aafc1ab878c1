"""Well-formed requests the hostile cases start from, for the two models the system serves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from maas_proto.inference import grpc_predict_v2_pb2 as pb

from tools.hostile.system import OTHER_MODEL, OTHER_WIDTH
from tools.up import DEMO_MODEL

DIGITS_INPUT = "input"
DIGITS_PIXELS = 64  # 1x8x8 per image


def digits_request(batch: int = 1, version: str = "", typed: bool = False) -> pb.ModelInferRequest:
    """A valid digits request of `batch` images (raw contents unless `typed`)."""
    pixels = np.zeros((batch, 1, 8, 8), np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=DIGITS_INPUT, datatype="FP32", shape=list(pixels.shape)
    )
    request = pb.ModelInferRequest(model_name=DEMO_MODEL, model_version=version, inputs=[tensor])
    if typed:
        tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    else:
        request.raw_input_contents.append(pixels.tobytes())
    return request


def other_request(batch: int = 1) -> pb.ModelInferRequest:
    """A valid request for the second model (x: [batch, OTHER_WIDTH] FP32)."""
    x = np.ones((batch, OTHER_WIDTH), np.float32)
    shape = [batch, OTHER_WIDTH]
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=shape)
    return pb.ModelInferRequest(
        model_name=OTHER_MODEL, inputs=[tensor], raw_input_contents=[x.tobytes()]
    )


def tensor_request(
    datatype: str, shape: Sequence[int], raw: bytes | None = None, model: str = DEMO_MODEL
) -> pb.ModelInferRequest:
    """A request for `model` with one input of any datatype and shape (and raw bytes)."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=DIGITS_INPUT, datatype=datatype, shape=list(shape)
    )
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor])
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def same_size_reference(size: int) -> bytes:
    """A request of `size` bytes that is well formed: one digits input, one raw field.

    What any server must at least receive and parse for a message this large; the
    RSS goal counts a hostile request's cost beyond this one's.
    """
    head = digits_request(batch=1)
    del head.raw_input_contents[:]
    room = size - len(head.SerializeToString()) - 1  # less the raw field's tag
    for width in range(1, 11):  # the length's varint width, which depends on the length
        length = room - width
        if length >= 0 and max(1, (length.bit_length() + 6) // 7) == width:
            head.raw_input_contents.append(b"\0" * length)
            break
    return head.SerializeToString()
