"""Continuous batching on one thread: sequences join between steps and leave when done.

Each step first drops the sequences that were cancelled or ran past their deadline,
admits waiting requests while a slot and the cache budget allow, prefills admitted
prompts one at a time, alone in their slot, up to `prefill_chunk` prompt tokens a
step (a long prompt takes several steps, so it stalls the others' tokens for one
chunk at a time, not its whole length), then decodes one token for every sequence
past its prompt in one batched run. Tokens reach the event loop through one
call_soon_threadsafe per step, into per-request asyncio queues: the engine never
waits on a consumer, and a queue holds at most max_tokens pieces.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from services.common.errors import (
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.inference.tasks.generate.chat import TextStream
from services.inference.tasks.generate.decoder import Decoder
from services.inference.tasks.generate.sampling import Sampler, SamplingParams, StopText

_log = logging.getLogger(__name__)
# Prompt tokens prefilled per step at most: the longest stall a long prompt puts on
# the batch's next tokens.
PREFILL_CHUNK = 256


@dataclass(frozen=True)
class Chunk:
    """Text made by one step for one request; the last one has `finish` or `error`."""

    text: str
    # Output tokens so far, this step's included.
    tokens: int
    finish: str | None = None
    error: ServiceError | None = None

    @property
    def final(self) -> bool:
        """Whether the request ends with this chunk."""
        return self.finish is not None or self.error is not None


@dataclass(eq=False)
class Job:
    """One request's sequence, from the queue to its last token."""

    prompt: list[int]
    params: SamplingParams
    text: TextStream
    # time.monotonic() after which it stops; None for none.
    deadline: float | None
    # Who is charged for its tokens (a bounded metrics label).
    key: str = "anonymous"
    # Called on the engine thread with each step's logits row (tests compare them).
    on_logits: Callable[[np.ndarray], None] | None = None
    queue: asyncio.Queue[Chunk] = field(init=False)
    sampler: Sampler = field(init=False)
    stop: StopText = field(init=False)
    slot: int = -1
    # Tokens in the cache, and the token to feed next.
    length: int = 0
    last: int = 0
    generated: int = 0
    finish: str | None = None
    # Set from the event loop: the consumer is gone.
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float = 0.0
    first_token: float = 0.0

    def __post_init__(self) -> None:
        # At most one chunk a token and one last word: put_nowait never finds it full.
        self.queue = asyncio.Queue(maxsize=self.params.max_tokens + 2)
        self.sampler = Sampler(self.params)
        self.stop = StopText(self.params.stop)

    @property
    def reserve(self) -> int:
        """Cache tokens it may grow to."""
        return len(self.prompt) + self.params.max_tokens


class Observer:
    """What the engine tells metrics; every method runs on the engine thread."""

    def admitted(self, job: Job) -> None:
        """A job left the queue and is about to be prefilled."""

    def tokens(self, jobs: list[Job]) -> None:
        """Each of `jobs` got one more output token this step."""

    def finished(self, job: Job) -> None:
        """A job left the engine (done, stopped or failed)."""


class Engine:
    """Slots, the cache budget, the queue and the step loop of one generate model."""

    def __init__(
        self,
        decoder: Decoder,
        tokenizer: Tokenizer,
        *,
        slots: int,
        cache_tokens: int,
        max_queue: int,
        observer: Observer | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.slots = slots
        self.cache_tokens = cache_tokens
        self.max_queue = max_queue
        # At least 4, so that a chunk can always leave 2 tokens and still move on.
        self.prefill_chunk = max(4, prefill_chunk)
        self.eos = frozenset(decoder.shape.eos_token_ids)
        self.observer = observer or Observer()
        # Read by metrics from other threads; written by the engine thread only.
        self.reserved = 0
        self.in_use = 0
        # Decoding sequences, in slots 0..n-1 (the batch).
        self._active: list[Job] = []
        # Admitted (cache reserved), prompt not yet whole in the cache; the first one,
        # once begun, sits in slot n, right after the batch, so it joins it in place.
        self._admitted: deque[Job] = deque()
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._failed = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for a slot or for cache."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Sequences admitted: decoding, or having their prompt prefilled."""
        return len(self._active) + len(self._admitted)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the step thread; chunks are delivered on `loop`."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="generate-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job (on the event loop); ResourceExhausted when the queue is full."""
        with self._cond:
            if self._closing or self._failed:
                raise Unavailable("the model is unloading")
            if len(self._waiting) >= self.max_queue:
                raise ResourceExhausted(
                    f"generation queue is full ({self.max_queue} requests wait for cache)"
                )
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job at the next step (or drop it from the queue) and free its cache."""
        with self._cond:
            if job.finish is not None or job.cancelled:
                return
            job.cancelled = True
            self._cond.notify()

    def close(self) -> None:
        """Blocking: refuse new jobs, finish the queued and running ones (a consumer
        that goes away cancels its own), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    # The engine thread from here on.

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception:  # noqa: BLE001 - a failed loop must end its requests, not hang them
            _log.exception("generation engine failed")
            with self._cond:
                self._failed = True
            self._end_all(error=Internal("generation failed"))

    def _step(self) -> bool:
        events: list[tuple[Job, Chunk]] = []
        with self._cond:
            while not self._waiting and not self.running and not self._closing:
                self._cond.wait()
            if self._closing and not self._waiting and not self.running:
                return False
        self._retire(events, time.monotonic())
        with self._cond:
            self._admit(events, time.monotonic())
        self._prefill(events)
        self._retire(events, None)
        if self._active:
            try:
                self._decode(events)
            except Exception:  # noqa: BLE001 - the batch fails, the engine serves on
                _log.exception("decode step failed")
                for job in self._active:
                    self._end(job, events, error=Internal("generation failed"))
            self._retire(events, None)
        self.in_use = sum(job.length for job in (*self._active, *self._admitted))
        self._post(events)
        return True

    def _admit(self, events: list[tuple[Job, Chunk]], now: float) -> None:
        """Admit the waiting jobs that fit, first come first served; drop expired ones."""
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._end(job, events, finish="cancelled")
                continue
            if job.deadline is not None and now >= job.deadline:
                self._waiting.popleft()
                self._end(job, events, error=DeadlineExceeded("deadline passed in the queue"))
                continue
            fits = self.reserved + job.reserve <= self.cache_tokens
            if self.running >= self.slots or not fits:
                break
            self._waiting.popleft()
            job.admitted = time.perf_counter()
            self._admitted.append(job)
            self.reserved += job.reserve
            self.observer.admitted(job)

    def _prefill(self, events: list[tuple[Job, Chunk]]) -> None:
        """Feed admitted prompts, first come first served, up to prefill_chunk tokens;
        a prompt that is whole gives its first token and joins the batch."""
        budget = self.prefill_chunk
        while self._admitted and budget > 0:
            job = self._admitted[0]
            if job.slot < 0:
                job.slot = len(self._active)
            rest = len(job.prompt) - job.length
            take = min(budget, rest)
            if take < rest and rest - take < 2:
                # No 1-token last chunk: ORT's one-row kernels round differently from
                # the prompt path's (int8 activations), and the text drifts from a
                # whole prefill's; chunks of 2 or more give the very same cache.
                take = rest - 2
            if take < 2 and take < rest:
                return
            piece = job.prompt[job.length : job.length + take]
            try:
                logits = self.decoder.extend(job.slot, piece, job.length)
            except Exception:  # noqa: BLE001 - one prompt's failure ends that request only
                _log.exception("prefill failed")
                self._end(job, events, error=Internal("generation failed"))
                return
            job.length += take
            budget -= take
            if job.length < len(job.prompt):
                return
            self._admitted.popleft()
            self._active.append(job)
            job.first_token = time.perf_counter()
            self._accept(job, logits, events)
            self.observer.tokens([job])

    def _decode(self, events: list[tuple[Job, Chunk]]) -> None:
        jobs = self._active
        logits = self.decoder.decode([j.last for j in jobs], [j.length for j in jobs])
        for job, row in zip(jobs, logits, strict=True):
            job.length += 1
            self._accept(job, row, events)
        self.observer.tokens(jobs)

    def _accept(self, job: Job, logits: np.ndarray, events: list[tuple[Job, Chunk]]) -> None:
        """Choose the job's next token and send the text it completes."""
        if job.on_logits is not None:
            job.on_logits(logits)
        token = job.sampler(logits)
        job.generated += 1
        job.last = token
        if token in self.eos:
            events.append((job, Chunk(job.stop.flush(), job.generated, "stop")))
            job.finish = "stop"
            return
        text, stopped = job.stop.feed(job.text.step(token))
        if stopped:
            job.finish = "stop"
        elif job.generated >= job.params.max_tokens:
            job.finish = "length"
            text += job.stop.flush()
        events.append((job, Chunk(text, job.generated, job.finish)))

    def _retire(self, events: list[tuple[Job, Chunk]], now: float | None) -> None:
        """Drop finished jobs (and, with `now`, cancelled and expired ones); the last
        slots' caches move into the holes, so the batch stays in slots 0..n-1 and the
        prompt being prefilled right after it."""
        head = self._admitted[0] if self._admitted and self._admitted[0].slot >= 0 else None
        top = len(self._active) + (head is not None)
        leaving = [
            job for job in (*self._active, *self._admitted) if self._leaves(job, events, now)
        ]
        if not leaving:
            return
        gone = {id(job) for job in leaving}
        keep = [job for job in self._active if id(job) not in gone]
        holes = sorted(job.slot for job in leaving if 0 <= job.slot < len(keep))
        movers = [job for job in keep if job.slot >= len(keep)]
        for hole, job in zip(holes, movers, strict=True):
            self.decoder.cache.move(job.slot, hole, job.length)
            job.slot = hole
        self._active = sorted(keep, key=lambda job: job.slot)
        self._admitted = deque(job for job in self._admitted if id(job) not in gone)
        if head is not None and id(head) not in gone and head.slot != len(keep):
            self.decoder.cache.move(head.slot, len(keep), head.length)
            head.slot = len(keep)
        still = head is not None and id(head) not in gone
        self.decoder.cache.release(len(keep) + still, top - len(keep) - still)
        for job in leaving:
            self.reserved -= job.reserve
            job.slot = -1
            self.observer.finished(job)

    def _leaves(self, job: Job, events: list[tuple[Job, Chunk]], now: float | None) -> bool:
        """Whether a job leaves now: finished, or (with `now`) cancelled or expired."""
        if job.finish is not None:
            return True
        if now is None:
            return False
        if job.cancelled:
            self._end(job, events, finish="cancelled")
            return True
        if job.deadline is not None and now >= job.deadline:
            self._end(job, events, error=DeadlineExceeded("deadline passed while generating"))
            return True
        return False

    def _end(
        self,
        job: Job,
        events: list[tuple[Job, Chunk]],
        finish: str | None = None,
        error: ServiceError | None = None,
    ) -> None:
        job.finish = finish or "error"
        events.append((job, Chunk("", job.generated, finish, error)))

    def _end_all(self, finish: str | None = None, error: ServiceError | None = None) -> None:
        events: list[tuple[Job, Chunk]] = []
        with self._cond:
            active = [*self._active, *self._admitted]
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in [*active, *waiting]:
            if job.finish is None:
                self._end(job, events, finish, error)
        self._active = []
        self._admitted.clear()
        self.reserved = self.in_use = 0
        for job in active:
            self.observer.finished(job)
        self._post(events)

    def _post(self, events: list[tuple[Job, Chunk]]) -> None:
        if not events or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(_deliver, events)
        except RuntimeError:  # the loop closed: nobody is left to read them
            pass


def _deliver(events: list[tuple[Job, Chunk]]) -> None:
    for job, chunk in events:
        try:
            job.queue.put_nowait(chunk)
        except asyncio.QueueFull:  # cannot happen (max_tokens + 2); never stop the rest
            _log.error("a generation's chunk queue was full; chunk dropped")
