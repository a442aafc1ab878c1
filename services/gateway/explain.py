"""Explain calls (maas.explain.v1.Explainer) on the inference path, in plain Python.

An ExplainRequest keeps ModelInferRequest's field numbers for the fields both have
(name, version, id, parameters, inputs, raw contents), so it is read and rewritten
as ModelInfer is (services.gateway.wire) and routed the same way (Router.route:
auth, allow-list, rate limit, registry lookup, version resolution, canary, the pin
header). It goes to the chosen backend as a plain unary call of raw bytes to
/maas.explain.v1.Explainer/Explain (never over the multiplexed Forward streams),
through Router.dispatch, so with the same deadline, retries elsewhere on UNAVAILABLE,
service token and passed-on metadata as an inference. The one addition is the key's
evaluation budget (services.gateway.evaluations).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from maas_proto.explain.v1 import explain_pb2

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    Unimplemented,
)
from services.gateway import wire
from services.gateway.relay import key_passed

if TYPE_CHECKING:
    from services.gateway.routing import Call, Router

_log = logging.getLogger(__name__)
SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name
METHOD = "Explain"
PATH = f"/{SERVICE_NAME}/{METHOD}"
MAX_EVALUATIONS = "max_evaluations"
PARAMETERS = explain_pb2.ExplainRequest.DESCRIPTOR.fields_by_name["parameters"].number
# What an explanation that names no max_evaluations is charged (inference's default).
DEFAULT_MAX_EVALUATIONS = 2048
# Failures that mean no evaluation was spent: the whole charge is given back.
_NOTHING_SPENT = (InvalidArgument, NotFound, FailedPrecondition, Unavailable, Unimplemented)


def requested_evaluations(request: bytes) -> int:
    """What a serialized ExplainRequest may spend: parameters["max_evaluations"] when
    it is an integer, else the default (inference refuses a wrong one, naming it)."""
    # Only the parameters are parsed: the inputs and background may be megabytes, and
    # parsing them here would copy them on the event loop for one integer.
    try:
        parsed = explain_pb2.ExplainRequest.FromString(wire.only_field(request, PARAMETERS))
    except DecodeError:
        raise InvalidArgument("malformed request: not an ExplainRequest") from None
    param = parsed.parameters.get(MAX_EVALUATIONS)
    kind = param.WhichOneof("parameter_choice") if param is not None else None
    if param is not None and kind in ("int64_param", "uint64_param"):
        return max(0, int(getattr(param, kind)))
    return DEFAULT_MAX_EVALUATIONS


def _spent(data: bytes) -> int | None:
    """The evaluations a serialized ExplainResponse says it spent (None: unreadable)."""
    try:
        return int(explain_pb2.ExplainResponse.FromString(data).evaluations)
    except DecodeError:
        _log.error("a backend's Explain reply does not decode")
        return None


async def explain(router: Router, call: Call) -> tuple[bytes, str]:
    """Router.explain: route and forward one Explain call, charging the key's evaluation
    budget and giving back what the explanation did not spend; the reply and the version
    that answered, counted once."""
    code, answered, model, charged = "INTERNAL", "", "", 0.0
    metrics, app = router.metrics, router.app
    try:
        cost = requested_evaluations(call.request)
        route = await router.route(call.key, call.head, call.pin, call.protocol)
        model = router.label(route.model)
        try:
            charged = await app.spend_evaluations(call.key, cost)
        except ResourceExhausted:
            metrics.rate_limited(call.key.id if call.key else "", call.protocol).inc()
            raise
        with metrics.inflight.track_inprogress():
            data, route = await router.dispatch(PATH, call, route, key_passed(call))
        answered = wire.read_head(data).version or route.version
        router.answered_for(route.model)
        model = router.label(route.model)
        spent = _spent(data)
        if spent is not None:
            await app.refund_evaluations(call.key, charged - min(charged, spent))
            metrics.evaluations(model).inc(spent)
        code = "OK"
        return data, answered
    except ServiceError as exc:
        code = exc.status
        if isinstance(exc, _NOTHING_SPENT):
            await app.refund_evaluations(call.key, charged)
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    finally:
        metrics.explanations(model, answered if model else "", code, call.protocol).inc()
