"""Generative models (`task: generate`): v2 requests in, text out, whole or streamed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from services.common.errors import InvalidArgument
from services.inference.config import ModelConfig
from services.inference.runtime import CUDA, TENSORRT, LoadError, create_session
from services.inference.tasks import RequestContext, StreamPart, Tensors
from services.inference.tasks.generate.chat import TextStream, load_template, load_tokenizer
from services.inference.tasks.generate.decoder import Decoder, read_shape
from services.inference.tasks.generate.engine import Chunk, Engine, Job
from services.inference.tasks.generate.metrics import GenerationMetrics
from services.inference.tasks.generate.params import (
    GenerateRequest,
    generate_signature,
    parse_request,
)

# Prompts longer than this (characters) are tokenized in a worker thread.
OFF_LOOP_CHARS = 1 << 14


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype=object)


def _count(value: int) -> np.ndarray:
    return np.array([value], dtype=np.uint32)


class GenerateModel:
    """A decoder with its tokenizer, chat template and continuous-batching engine."""

    decoupled = True

    def __init__(self, directory: Path, config: ModelConfig) -> None:
        settings = config.generate
        shape = read_shape(directory)
        self.tokenizer = load_tokenizer(directory)
        self.template = load_template(directory)
        self.max_context = settings.max_context
        if shape.context_length and shape.context_length < self.max_context:
            self.max_context = shape.context_length
        self.default_max_tokens = settings.default_max_tokens
        session = create_session(directory / shape.filename, config)
        self.provider = session.get_providers()[0]
        self.signature = generate_signature()
        self.metrics = GenerationMetrics()
        slots = settings.max_sequences
        cache = settings.cache_tokens or slots * self.max_context
        device = "cuda" if self.provider in (CUDA, TENSORRT) else "cpu"
        decoder = Decoder(session, shape, slots, self.max_context, device, config.cuda.device_id)
        self.engine = Engine(
            decoder,
            self.tokenizer,
            slots=slots,
            cache_tokens=cache,
            max_queue=settings.max_queue_size,
            observer=self.metrics,
        )
        self.metrics.watch(self.engine)
        self.metrics_registry = self.metrics.registry
        self._warm_up()

    def _warm_up(self) -> None:
        """One prefill and one decode step, so that the first request does not pay
        ONNX Runtime's first-run costs; LoadError if the decoder cannot run."""
        decoder = self.engine.decoder
        try:
            decoder.prefill(0, [0, 0])
            decoder.decode([0], [2])
        except Exception as exc:  # noqa: BLE001 - ORT raises bare RuntimeError/Fail types
            raise LoadError(f"the decoder failed its warm-up run: {exc}") from None

    @property
    def depth(self) -> int:
        """Requests waiting for a slot or for cache."""
        return self.engine.depth

    def start(self) -> None:
        """Start the engine thread, delivering to the running loop."""
        self.engine.start(asyncio.get_running_loop())

    def request(self, inputs: Tensors) -> GenerateRequest:
        """The checked request in `inputs`."""
        render = self.template.render if self.template is not None else None
        return parse_request(inputs, self.default_max_tokens, render)

    async def job(
        self, request: GenerateRequest, deadline: float | None, context: RequestContext
    ) -> Job:
        """The engine job for a request, its tokens counted against the cache."""
        encode = partial(self.tokenizer.encode, add_special_tokens=not request.chat)
        if len(request.prompt) > OFF_LOOP_CHARS:
            # A long prompt takes the tokenizer milliseconds: off the loop, as big decodes go.
            prompt = (await asyncio.to_thread(encode, request.prompt)).ids
        else:
            prompt = encode(request.prompt).ids
        if not prompt:
            raise InvalidArgument("the prompt is empty: expected at least one token")
        sampling = request.sampling
        room = min(self.max_context, self.engine.cache_tokens) - len(prompt)
        if not request.max_tokens_given and 0 < room < sampling.max_tokens:
            # The model's default max_tokens gives way to a long prompt; a given one does not.
            sampling = replace(sampling, max_tokens=room)
        need = len(prompt) + sampling.max_tokens
        if need > self.max_context:
            raise InvalidArgument(
                f"prompt of {len(prompt)} tokens plus max_tokens {sampling.max_tokens} "
                f"is {need} tokens, expected at most the model's max_context {self.max_context}"
            )
        if need > self.engine.cache_tokens:
            raise InvalidArgument(
                f"prompt of {len(prompt)} tokens plus max_tokens {sampling.max_tokens} "
                f"needs {need} cache tokens, expected at most the model's cache_tokens "
                f"{self.engine.cache_tokens}"
            )
        if deadline is not None:
            # The loop's clock and the engine thread's may differ in origin.
            deadline = deadline - asyncio.get_running_loop().time() + time.monotonic()
        return Job(
            prompt,
            sampling,
            TextStream(self.tokenizer),
            deadline,
            key=self.metrics.key(context.key_id),
        )

    async def chunks(self, job: Job) -> AsyncIterator[Chunk]:
        """The job's chunks as the engine makes them; leaving early cancels it."""
        self.engine.submit(job)
        try:
            while True:
                chunk = await job.queue.get()
                if chunk.error is not None:
                    raise chunk.error
                yield chunk
                if chunk.final:
                    return
        finally:
            self.engine.cancel(job)

    def _usage(self, request: GenerateRequest, job: Job, chunk: Chunk, outputs: Tensors) -> Tensors:
        if request.return_input_tokens:
            outputs["num_input_tokens"] = _count(len(job.prompt))
        if request.return_output_tokens:
            outputs["num_output_tokens"] = _count(chunk.tokens)
        if request.return_finish_reason:
            outputs["finish_reason"] = _bytes(chunk.finish or "")
        return outputs

    async def submit(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> tuple[Tensors, int]:
        """The whole text; the prompt first unless exclude_input_in_output, as vLLM's."""
        request = self.request(inputs)
        job = await self.job(request, deadline, context)
        return await self._whole(request, job)

    async def _whole(self, request: GenerateRequest, job: Job) -> tuple[Tensors, int]:
        pieces = [] if request.exclude_input else [request.prompt]
        last: Chunk | None = None
        async for last in self.chunks(job):
            pieces.append(last.text)
        assert last is not None
        queue_ns = int(max(0.0, job.admitted - job.submitted) * 1e9)
        return self._usage(request, job, last, {"text_output": _bytes("".join(pieces))}), queue_ns

    async def stream(
        self, inputs: Tensors, deadline: float | None, context: RequestContext
    ) -> AsyncIterator[StreamPart]:
        """With `stream` true, one part per step that made text (the new text only),
        the last one final; without it one final part with the whole text, as vLLM's
        backend answers a decoupled request that does not ask to stream."""
        request = self.request(inputs)
        job = await self.job(request, deadline, context)
        if not request.stream:
            whole, _ = await self._whole(request, job)
            yield StreamPart(whole, final=True)
            return
        async for chunk in self.chunks(job):
            if not chunk.text and not chunk.final:
                continue
            outputs: Tensors = {"text_output": _bytes(chunk.text)}
            if chunk.final:
                outputs = self._usage(request, job, chunk, outputs)
            yield StreamPart(outputs, final=chunk.final)

    async def close(self) -> None:
        """End running and queued requests as cancelled and stop the engine thread."""
        await asyncio.to_thread(self.engine.close)


def open_generate(directory: Path, config: ModelConfig) -> GenerateModel:
    """Load a generate model from its version directory; blocking, raises LoadError."""
    if not (directory / "genai_config.json").is_file():
        raise LoadError("a generate model needs genai_config.json beside model.onnx")
    return GenerateModel(directory, config)
