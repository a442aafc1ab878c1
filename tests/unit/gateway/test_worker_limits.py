"""The limits table a gateway supervisor's workers share (services/gateway/worker_limits.py):
one bucket per key whichever worker takes from it, counts that survive a race between
processes, stream slots summed over the workers, and per-worker limits only for a key
the table has no room for."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest

from services.common.errors import ResourceExhausted
from services.gateway.auth import ApiKey
from services.gateway.worker_limits import WorkerStreamSlots, WorkerTable, create, table_bytes


@pytest.fixture
def table_fd() -> Iterator[int]:
    fd = create(keys=2, workers=2)
    yield fd
    os.close(fd)


def key(ident: str) -> ApiKey:
    return ApiKey(id=ident, digest=b"\0" * 32)


def test_both_workers_draw_on_one_bucket(table_fd: int) -> None:
    first, second = WorkerTable(table_fd, 0), WorkerTable(table_fd, 1)
    a = first.bucket("alice", "requests", rate=1.0, burst=3.0, now=100.0)
    b = second.bucket("alice", "requests", rate=1.0, burst=3.0, now=100.0)
    assert [a.take(100.0), b.take(100.0), a.take(100.0)] == [True, True, True]
    assert not b.take(100.0)  # alone, worker 1 would have had 2 of its own 3 left
    assert b.tokens == 0.0
    assert a.take(101.0)  # a second later: one token refilled, for either worker
    assert not b.take(101.0)
    # The explanation bucket of the same key is another bucket.
    assert second.bucket("alice", "evaluations", 1.0, 5.0, 101.0).take(101.0, 5.0)
    # A refund is capped at the burst.
    refunded = first.bucket("alice", "requests", 1.0, 3.0, 101.0)
    refunded.give(101.0, 10.0)
    assert [b.take(101.0) for _ in range(4)] == [True, True, True, False]


TRIES, BURST = 20_000, 30_000.0


def _take_all(fd: int, index: int, start: Any, results: multiprocessing.Queue[int]) -> None:
    table = WorkerTable(fd, index)
    bucket = table.bucket("alice", "requests", rate=1e-9, burst=BURST, now=0.0)
    start.wait()
    results.put(sum(bucket.take(1.0) for _ in range(TRIES)))


def test_two_processes_racing_never_take_a_token_twice(table_fd: int) -> None:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[int] = context.Queue()
    start = context.Barrier(2)
    workers = [
        context.Process(target=_take_all, args=(table_fd, i, start, results)) for i in range(2)
    ]
    for process in workers:
        process.start()
    taken = [results.get(timeout=60) for _ in workers]
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    # More tries than tokens, at once: exactly the burst taken in all, however the two
    # interleaved (without the lock, updates are lost and more are taken).
    assert sum(taken) == BURST, taken


def test_stream_slots_count_every_worker_and_a_new_worker_frees_its_own(table_fd: int) -> None:
    first, second = WorkerTable(table_fd, 0), WorkerTable(table_fd, 1)
    slots0, slots1 = WorkerStreamSlots(first, 2), WorkerStreamSlots(second, 2)
    alice = key("alice")
    with slots0.hold(alice), slots1.hold(alice):
        assert slots0.open("alice") == 2
        with pytest.raises(ResourceExhausted, match="2 ModelStreamInfer streams open across"):
            with slots0.hold(alice):
                pass
    assert slots1.open("alice") == 0
    held = slots0.hold(alice)
    held.__enter__()  # worker 0 dies with this stream open...
    assert slots1.open("alice") == 1
    WorkerTable(table_fd, 0)  # ...and its replacement zeroes worker 0's counts
    assert slots1.open("alice") == 0
    with slots1.hold(None):  # no key (auth off): no cap
        pass


def test_a_key_the_table_has_no_room_for_keeps_per_worker_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fd = create(keys=0, workers=2)  # sized for no key: its 8 spare slots only
    try:
        first, second = WorkerTable(fd, 0), WorkerTable(fd, 1)
        for i in range(first.slots):
            assert first.take(f"key-{i}", "requests", 1.0, 1.0, 0.0, 1.0) == (True, 0.0)
        with caplog.at_level(logging.WARNING):
            a = first.bucket("late", "requests", 1.0, 1.0, 0.0)
            b = second.bucket("late", "requests", 1.0, 1.0, 0.0)
            assert a.take(0.0) and b.take(0.0)  # one token each: the workers' own buckets
            assert not a.take(0.0)
        assert "API key 'late' has per-worker limits" in caplog.text
        assert caplog.text.count("limits table is full") == 2  # once per worker
        slots = WorkerStreamSlots(first, 1)
        with slots.hold(key("late")):
            with pytest.raises(ResourceExhausted, match="1 ModelStreamInfer streams open:"):
                with slots.hold(key("late")):
                    pass
    finally:
        os.close(fd)


def test_a_file_that_is_no_table_or_a_worker_out_of_range_is_refused(table_fd: int) -> None:
    with pytest.raises(ValueError, match="not a limits table for worker 2: .* 2 workers"):
        WorkerTable(table_fd, 2)
    other = os.memfd_create("other")
    try:
        os.ftruncate(other, table_bytes(1, 1))
        with pytest.raises(ValueError, match="magic"):
            WorkerTable(other, 0)
    finally:
        os.close(other)
