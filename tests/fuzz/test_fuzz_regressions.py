"""Every crash the fuzz targets found, kept as a plain test of its minimal input.

Each test is marked `fuzz_regression(<target>)`, so the fuzz report counts the
crashes found per target; those still open are xfail(strict=True).
"""

from __future__ import annotations

import pytest
from inference import grpc_predict_v2_pb2 as pb

from services.common import tensors
from services.common.errors import InvalidArgument

Tensor = pb.ModelInferRequest.InferInputTensor


@pytest.mark.fuzz_regression("tensors.decode")
@pytest.mark.parametrize("datatype", ["BYTES", "UINT16", "BOOL"])
def test_shape_beyond_any_array_is_invalid_argument(datatype: str) -> None:
    # numpy's reshape raised ValueError "array is too big" (INTERNAL on the wire).
    tensor = Tensor(name="x", datatype=datatype, shape=[0, 2**62])
    with pytest.raises(InvalidArgument, match=r"tensor 'x': shape \[0, 4611686018427387904\]"):
        tensors.decode(tensor, b"")


@pytest.mark.fuzz_regression("tensors.decode")
def test_rank_over_numpy_limit_is_invalid_argument() -> None:
    # A rank-70 shape made numpy raise ValueError (issue 11, item 14).
    tensor = Tensor(name="x", datatype="FP32", shape=[1] * 70)
    with pytest.raises(InvalidArgument, match="70 dimensions, expected at most 32"):
        tensors.decode(tensor, b"\x00" * 4)


@pytest.mark.fuzz_regression("tensors.decode")
def test_huge_bytes_shape_is_refused_before_allocating() -> None:
    # np.empty(2**31, object) ran before any size check: MemoryError, or 16 GiB.
    tensor = Tensor(name="x", datatype="BYTES", shape=[2**31])
    with pytest.raises(InvalidArgument, match="too few for 2147483648 BYTES elements"):
        tensors.decode(tensor, b"")


@pytest.mark.fuzz_regression("BYTES codec")
def test_bytes_count_beyond_the_raw_contents_is_invalid_argument() -> None:
    # 0 bytes claiming 402,612,218 elements allocated 3 GiB first.
    with pytest.raises(InvalidArgument, match="expected at least 1610448872"):
        tensors.decode_bytes_elements("x", b"", 402_612_218)
