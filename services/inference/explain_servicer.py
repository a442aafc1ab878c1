"""The maas.explain.v1.Explainer servicer: protobuf in, Explainer call, protobuf out."""

from __future__ import annotations

import grpc
import numpy as np
from maas_proto.explain.v1 import explain_pb2, explain_pb2_grpc

from services.common.caller import key_id_of
from services.common.deadlines import deadline_of
from services.common.tensors import encode
from services.inference.explain.request import explain_request
from services.inference.explain.service import Explainer, ExplainResult

SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


class ExplainServicer(explain_pb2_grpc.ExplainerServicer):
    """Thin adapter from maas.explain.v1 to the Explainer."""

    def __init__(self, explainer: Explainer) -> None:
        self.explainer = explainer

    async def Explain(  # noqa: N802 - the RPC's name in the proto
        self, request: explain_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> explain_pb2.ExplainResponse:
        key_id = key_id_of(context.invocation_metadata())
        call = explain_request(request, deadline_of(context), key_id)
        return explain_response(await self.explainer.explain(call), raw=call.raw)


def explain_response(result: ExplainResult, *, raw: bool) -> explain_pb2.ExplainResponse:
    """The response: FP64 attributions (and a tokens method's tokens as BYTES), raw
    contents unless the request asked for typed ones."""
    e = result.explanation
    response = explain_pb2.ExplainResponse(
        model_name=result.model,
        model_version=result.version,
        id=result.id,
        output=e.output,
        target=e.target,
        method=result.method,
        base_value=e.base_value,
        output_value=e.output_value,
        error_estimate=e.error_estimate,
        evaluations=e.evaluations,
    )
    tensors = {n: np.asarray(a, dtype=np.float64) for n, a in e.attributions.items()}
    if e.tokens is not None:
        name = next(iter(e.attributions), "input")
        tokens = np.empty(len(e.tokens), dtype=object)
        tokens[:] = e.tokens
        tensors[f"{name}.tokens"] = tokens
    for name, array in tensors.items():
        data = encode(array, response.attributions.add(name=name), raw=raw)
        if data is not None:
            response.raw_attribution_contents.append(data)
    return response
