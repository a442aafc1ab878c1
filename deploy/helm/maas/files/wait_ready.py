"""Wait until a gRPC server reports SERVING on grpc.health.v1 (service "": the whole server).

Run by the seed Job's init container before it registers models:
    python /scripts/wait_ready.py HOST:PORT --timeout 300 [--ca ca.crt --cert tls.crt --key tls.key]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_channel import add_tls_arguments, open_channel

log = logging.getLogger("wait_ready")


def is_serving(target: str, args: argparse.Namespace) -> str:
    """The server's health status name, or why it could not be asked."""
    request = health_pb2.HealthCheckRequest(service="")
    try:
        with open_channel(target, args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
    except grpc.RpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main() -> int:
    """Poll until SERVING (exit 0) or the timeout (exit 1)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description="Wait for a gRPC server to be SERVING.")
    parser.add_argument("target", help="host:port")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait in all")
    add_tls_arguments(parser)
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    while True:
        status = is_serving(args.target, args)
        if status == "SERVING":
            log.info("%s is SERVING", args.target)
            return 0
        if time.monotonic() > deadline:
            log.error("%s not SERVING after %.0fs (last: %s)", args.target, args.timeout, status)
            return 1
        log.info("%s: %s; retrying", args.target, status)
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
