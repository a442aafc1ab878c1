"""What k6's output tells when it fails: a Go crash's first line survives the goroutine
dump that follows it, and is what decides a rerun (tools/bench/k6.py)."""

from __future__ import annotations

import subprocess

from tools.bench import k6


def completed(stdout: str, stderr: str, rc: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["k6"], rc, stdout, stderr)


def test_a_go_panic_is_found_and_kept_in_front_of_the_tail() -> None:
    frame = "goroutine {} [running]:\n\tgithub.com/grafana/sobek.(*vm).run()\n"
    dump = "".join(frame.format(i) for i in range(200))
    stderr = "panic: runtime error: index out of range [3] with length 3\n\n" + dump
    assert k6.go_crash(stderr) == "panic: runtime error: index out of range [3] with length 3"
    log = k6._tail(completed("", stderr))
    assert log.startswith("panic: runtime error: index out of range [3]")
    assert log.endswith(dump[-200:])
    assert len(log) < len(stderr)


def test_a_fatal_error_counts_as_a_crash_and_an_ordinary_failure_does_not() -> None:
    fatal = "fatal error: concurrent map writes"
    assert k6.go_crash(f"x\n{fatal}\n") == fatal
    refused = "ERRO[0000] GoError: dial tcp 127.0.0.1:1: connect: connection refused\n"
    assert k6.go_crash(refused) == ""
    assert k6._tail(completed("", refused, rc=107)) == refused
