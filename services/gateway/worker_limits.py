"""Rate limits and stream slots that hold across the workers of one `--workers N`
supervisor without Redis: one table in shared memory instead of a bucket per worker.

The supervisor makes the table (an anonymous memfd, sized for the configured keys, see
`table_bytes`) and hands every worker its descriptor (services/common/workers.py). Each
worker maps it; every read-modify-write holds a POSIX lock on the whole file (`lockf`,
per process, so it works although the workers share one open file). Times are
CLOCK_MONOTONIC (time.monotonic), one clock for every process on the machine.

Each configured key has one slot, found by open addressing on a digest of its id:
its request bucket, its explanation bucket, and one ModelStreamInfer count per
worker. A worker zeroes its own counts when it starts, so the streams of a worker
that died are freed by its replacement. Keys come from the keys file only, so the
table is bounded by configuration, never by clients; a key that finds no free slot
(a keys file that grew after the supervisor sized the table) keeps per-worker
limits, logged once. With Redis (services.gateway.limiter), Redis decides and this
table is the fail-open fallback, as each worker's own buckets are otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
from collections.abc import Iterator
from typing import get_args

from services.common.errors import ResourceExhausted
from services.gateway.auth import ApiKey, Bucket, StreamSlots, TokenBucket

_log = logging.getLogger(__name__)

MAGIC = b"MAASLIM1"
_HEADER = struct.Struct("<8sII")  # magic, slots, workers
_KEY = struct.Struct("<16s")  # digest of the key id; all zeros: a free slot
_BUCKET = struct.Struct("<dd")  # tokens (NaN: never used, so full), updated
_COUNT = struct.Struct("<I")
_BUCKETS: tuple[Bucket, ...] = get_args(Bucket)  # a slot's buckets, in this order


def _slot_bytes(workers: int) -> int:
    return _KEY.size + 2 * _BUCKET.size + workers * _COUNT.size


def table_bytes(keys: int, workers: int) -> int:
    """The size of a table for `keys` keys and `workers` workers (half its slots free)."""
    return _HEADER.size + (2 * keys + 8) * _slot_bytes(workers)


def create(keys: int, workers: int) -> int:
    """A new table (the supervisor's side): its file descriptor, to hand to the workers."""
    fd = os.memfd_create("maas-gateway-limits", os.MFD_CLOEXEC)
    size = table_bytes(keys, workers)
    os.ftruncate(fd, size)
    slots = (size - _HEADER.size) // _slot_bytes(workers)
    os.pwrite(fd, _HEADER.pack(MAGIC, slots, workers), 0)
    return fd


def _digest(key_id: str) -> bytes:
    digest = hashlib.blake2b(key_id.encode(), digest_size=_KEY.size).digest()
    return digest if any(digest) else b"\x01" + digest[1:]


class WorkerTable:
    """A worker's view of the table behind `fd`, as worker `index`."""

    def __init__(self, fd: int, index: int) -> None:
        size = os.fstat(fd).st_size
        magic, self.slots, self.workers = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
        if magic != MAGIC or not 0 <= index < self.workers:
            raise ValueError(
                f"not a limits table for worker {index}: magic {magic!r}, {self.workers} workers"
            )
        self._fd, self.index = fd, index
        self._map = mmap.mmap(fd, size)
        self._slot = _slot_bytes(self.workers)
        self._warned: set[str] = set()
        with self._locked():
            for slot in range(self.slots):
                _COUNT.pack_into(self._map, self._count_at(slot, index), 0)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _at(self, slot: int) -> int:
        return _HEADER.size + slot * self._slot

    def _bucket_at(self, slot: int, which: int) -> int:
        return self._at(slot) + _KEY.size + which * _BUCKET.size

    def _count_at(self, slot: int, worker: int) -> int:
        return self._at(slot) + _KEY.size + 2 * _BUCKET.size + worker * _COUNT.size

    def _find(self, key_id: str) -> int | None:
        """The key's slot, claimed if it has none yet (call with the lock held)."""
        digest = _digest(key_id)
        start = int.from_bytes(digest[:8], "little") % self.slots
        for probe in range(self.slots):
            slot = (start + probe) % self.slots
            (held,) = _KEY.unpack_from(self._map, self._at(slot))
            if held == digest:
                return slot
            if not any(held):
                _KEY.pack_into(self._map, self._at(slot), digest)
                for which in range(len(_BUCKETS)):
                    _BUCKET.pack_into(self._map, self._bucket_at(slot, which), math.nan, 0.0)
                return slot
        if key_id not in self._warned:
            self._warned.add(key_id)
            _log.warning(
                f"the workers' limits table is full: API key '{key_id}' has per-worker "
                "limits (restart the gateway to size the table for its keys file)"
            )
        return None

    # -- buckets -------------------------------------------------------------------

    def take(
        self, key_id: str, which: Bucket, rate: float, burst: float, now: float, cost: float
    ) -> tuple[bool, float] | None:
        """Refill the key's bucket to `now` and spend `cost` if there is that much (a
        negative cost gives tokens back, up to the burst): (taken, tokens left), or None
        when the key has no slot."""
        with self._locked():
            slot = self._find(key_id)
            if slot is None:
                return None
            at = self._bucket_at(slot, _BUCKETS.index(which))
            tokens, updated = _BUCKET.unpack_from(self._map, at)
            if math.isnan(tokens):
                tokens, updated = burst, now
            tokens = min(burst, tokens + max(0.0, now - updated) * rate)
            taken = tokens >= cost
            if taken:
                tokens = min(burst, tokens - cost)
            _BUCKET.pack_into(self._map, at, tokens, max(now, updated))
        return taken, tokens

    def bucket(
        self, key_id: str, which: Bucket, rate: float, burst: float, now: float
    ) -> TokenBucket:
        """The key's bucket in this table (services.gateway.auth.BucketFactory)."""
        return WorkerBucket(self, key_id, which, rate, burst, now)

    # -- stream slots --------------------------------------------------------------

    def open_streams(self, key_id: str) -> int:
        """Streams the key has open on every worker."""
        with self._locked():
            slot = self._find(key_id)
            return 0 if slot is None else self._streams(slot)

    def _streams(self, slot: int) -> int:
        return sum(
            _COUNT.unpack_from(self._map, self._count_at(slot, w))[0] for w in range(self.workers)
        )

    def open_stream(self, key_id: str, limit: int) -> bool | None:
        """Count one more stream for the key on this worker unless all workers together
        hold `limit`; None when the key has no slot."""
        with self._locked():
            slot = self._find(key_id)
            if slot is None:
                return None
            if self._streams(slot) >= limit:
                return False
            at = self._count_at(slot, self.index)
            (mine,) = _COUNT.unpack_from(self._map, at)
            _COUNT.pack_into(self._map, at, mine + 1)
            return True

    def close_stream(self, key_id: str) -> None:
        with self._locked():
            slot = self._find(key_id)
            if slot is None:
                return
            at = self._count_at(slot, self.index)
            (mine,) = _COUNT.unpack_from(self._map, at)
            _COUNT.pack_into(self._map, at, max(0, mine - 1))

    def close(self) -> None:
        self._map.close()


class WorkerBucket(TokenBucket):
    """A key's bucket in the table; the worker's own (this TokenBucket's state) stands in
    when the key got no slot."""

    def __init__(
        self, table: WorkerTable, key_id: str, which: Bucket, rate: float, burst: float, now: float
    ) -> None:
        super().__init__(rate, burst, now)
        self.table, self.key_id, self.which = table, key_id, which

    def take(self, now: float, cost: float = 1.0) -> bool:
        answer = self.table.take(self.key_id, self.which, self.rate, self.burst, now, cost)
        if answer is None:
            return super().take(now, cost)
        taken, self.tokens = answer
        return taken

    def give(self, now: float, amount: float) -> None:
        if self.table.take(self.key_id, self.which, self.rate, self.burst, now, -amount) is None:
            super().give(now, amount)


class WorkerStreamSlots(StreamSlots):
    """StreamSlots across every worker: `limit` streams per key in all, counted in the
    table; this worker's own count for a key that got no slot."""

    def __init__(self, table: WorkerTable, limit: int) -> None:
        super().__init__(limit)
        self.table = table

    def open(self, key_id: str) -> int:
        return self.table.open_streams(key_id)

    @contextlib.contextmanager
    def hold(self, key: ApiKey | None) -> Iterator[None]:
        if key is None:
            yield
            return
        opened = self.table.open_stream(key.id, self.limit)
        if opened is None:
            with super().hold(key):
                yield
            return
        if not opened:
            raise ResourceExhausted(
                f"API key '{key.id}' has {self.limit} ModelStreamInfer streams open across "
                f"the gateway's workers: at most {self.limit} at once (max_streams_per_key)"
            )
        try:
            yield
        finally:
            self.table.close_stream(key.id)
