"""A backend that stops answering (SIGSTOP) costs one call its deadline, not one per deadline."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import grpc
from maas_proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.integration.gateway.conftest import StartGateway, pair_request
from tests.servers import ServiceProcess


async def test_a_hung_backend_is_checked_and_ejected_after_one_missed_deadline(
    start_gateway: StartGateway, pair_repository: Path, tmp_path: Path
) -> None:
    args = ["--model-repository", str(pair_repository), "--metrics-port", "0"]
    hung = ServiceProcess("inference", args, tmp_path)
    healthy = ServiceProcess("inference", args, tmp_path)
    try:
        gateway = await start_gateway(
            backends=f"{hung.address},{healthy.address}", rng=random.Random(7)
        )
        async with grpc.aio.insecure_channel(f"localhost:{gateway.grpc.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(4):  # both backends in rotation
                await stub.ModelInfer(pair_request("1"), timeout=10)
            os.kill(hung.process.pid, signal.SIGSTOP)
            codes = []
            for _ in range(12):
                try:
                    await stub.ModelInfer(pair_request("1"), timeout=1)
                    codes.append("OK")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
            # Without the check, the idle hung backend ties for least loaded once each
            # call to it has expired, and about every other call fails.
            assert codes.count("OK") >= 11, codes
            assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, codes
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
        hung.stop()
        healthy.stop()
