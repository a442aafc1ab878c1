"""Host buffers over OrtValues live exactly as long as the arrays handed out."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import onnxruntime as ort

from services.inference.binding import array_over


def test_array_over_shares_memory_and_frees_the_ortvalue_with_the_array() -> None:
    # CPU memory stands in for CUDA's pinned host memory, which needs a GPU: the
    # ownership chain under test is the same.
    value = ort.OrtValue.ortvalue_from_shape_and_type([2, 3], np.float32)
    dead = weakref.ref(value)
    array = array_over(value, (2, 3), np.dtype(np.float32))
    array[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(value.numpy(), array)
    del value
    gc.collect()
    assert dead() is not None, "the OrtValue was freed while its array was in use"
    view = array[1:]
    del array
    gc.collect()
    assert dead() is not None, "a view of the array did not keep the OrtValue alive"
    del view
    gc.collect()
    assert dead() is None, "the OrtValue outlived every array over it"
