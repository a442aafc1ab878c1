"""perf's on-CPU table summed by thread and library (the rows below are from a real
`perf report --sort pid,dso` of the inference hop at c=16), and one real recording of
a process that spins on its main thread, where perf is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench import perf_profile

TABLE = """\
# Overhead      Pid:Command       Shared Object
# ........  ....................  ....................
#
    32.43%     6831:python        libpython3.11.so.1.0
    17.24%     6831:python        [kernel.kallsyms]
    11.06%     6831:python        cygrpc.cpython-311-x86_64-linux-gnu.so
     8.12%     6831:python        onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so
     6.48%     6843:python        [kernel.kallsyms]
     2.87%     6831:python        libc.so.6
     2.34%     6844:event_engine  [kernel.kallsyms]
     1.63%     6831:python        loop.cpython-311-x86_64-linux-gnu.so
     1.47%     6844:event_engine  cygrpc.cpython-311-x86_64-linux-gnu.so
     0.97%     6843:python        cygrpc.cpython-311-x86_64-linux-gnu.so
"""


def test_shares_by_thread_library_and_loop_thread() -> None:
    found = perf_profile.summarize(TABLE, pid=6831)
    total = 32.43 + 17.24 + 11.06 + 8.12 + 6.48 + 2.87 + 2.34 + 1.63 + 1.47 + 0.97
    loop = 32.43 + 17.24 + 11.06 + 8.12 + 2.87 + 1.63
    assert found["threads"] == {
        "loop": round(loop / total, 3),
        "python": round((6.48 + 0.97) / total, 3),
        "event_engine": round((2.34 + 1.47) / total, 3),
    }
    assert list(found["threads"]) == ["loop", "python", "event_engine"]  # largest first
    assert found["libraries"]["kernel"] == round((17.24 + 6.48 + 2.34) / total, 3)
    assert found["libraries"]["grpc"] == round((11.06 + 1.47 + 0.97) / total, 3)
    assert found["libraries"]["interpreter"] == round(32.43 / total, 3)
    assert found["libraries"]["ORT"] == round(8.12 / total, 3)
    assert found["libraries"]["event loop"] == round(1.63 / total, 3)
    assert found["loop"]["kernel"] == round(17.24 / total, 3)  # the loop thread's own
    assert "python" not in found["loop"]
    lines = perf_profile.describe({"hop": "inference", **found}, "inference c=16")
    assert lines[0] == "perf inference c=16 inference: threads loop 87%, python 9%, event_engine 4%"


def test_no_rows_is_no_shares() -> None:
    assert perf_profile.summarize("# nothing sampled\n", pid=1) == {
        "threads": {},
        "libraries": {},
        "loop": {},
    }


@pytest.mark.skipif(not perf_profile.available(), reason="perf (linux-perf) is not installed")
def test_a_real_recording_finds_the_busy_main_thread(tmp_path: Path) -> None:
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"]
    )
    try:
        data = tmp_path / "spin.data"
        recording = perf_profile.record(spinner.pid, 1, data)
        _, err = recording.communicate(timeout=60)
        if recording.returncode != 0 and not data.exists():
            pytest.skip(f"perf cannot record here: {err.decode(errors='replace')[-200:]}")
        found = perf_profile.summarize(perf_profile.report(data), spinner.pid)
    finally:
        spinner.kill()
        spinner.wait()
    assert found["threads"].get("loop", 0) > 0.9
    assert found["libraries"].get("interpreter", 0) > 0.5
