"""A backend stream for one HTTP request: its v2 responses until the final one.

Shared by the OpenAI routes and Triton's generate_stream: the stream holds one of
the key's stream slots (max_streams_per_key), as a gRPC ModelStreamInfer call does;
a relayed failure becomes the ServiceError of the status it names; closing the
iterator (the answer's end, or the client going away) closes the backend stream
and so cancels the generation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from maas_proto.inference import grpc_predict_v2_pb2 as pb

from services.common.errors import error_from_status
from services.gateway.http.openai_v2 import FINAL, StreamError, stream_response
from services.gateway.routing import Call, Router


def is_final(response: pb.ModelInferResponse) -> bool:
    """Whether a streamed response is its request's last (true when it does not say)."""
    final = response.parameters.get(FINAL)
    return True if final is None else final.bool_param


async def backend_stream(router: Router, call: Call) -> AsyncGenerator[pb.ModelInferResponse, None]:
    """The call's streamed responses until the final one; closing this closes the stream."""
    with router.stream(call.key):
        stream = router.stream_infer(call)
        try:
            async for data in stream:
                response = stream_response(data)
                if isinstance(response, StreamError):
                    # The status the relay names; a failure without one is the server's.
                    raise error_from_status(response.status or "UNKNOWN", response.message)
                yield response
                if is_final(response):
                    return
        finally:
            await stream.aclose()
