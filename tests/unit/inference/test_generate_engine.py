"""The generate engine in-process over the demo SmolLM2: batched against alone, the
cache budget and queue, cancellation and deadlines."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.inference.config import ModelConfig
from services.inference.runtime import LoadError
from services.inference.tasks import RequestContext
from services.inference.tasks.generate.bench import bench
from services.inference.tasks.generate.chat import TextStream
from services.inference.tasks.generate.decoder import DeviceKvCache
from services.inference.tasks.generate.engine import Job
from services.inference.tasks.generate.model import GenerateModel, open_generate
from services.inference.tasks.generate.sampling import SamplingParams
from tests.integration.inference.generate_models import CHAT, QUESTIONS, smollm2_dir

# The first test of a fresh checkout builds the demo model (a minute or more on 2 cores).
pytestmark = pytest.mark.timeout(300)
TIE = 1e-3


@pytest.fixture
async def make_model() -> AsyncIterator[Callable[..., GenerateModel]]:
    """Generate models over the demo SmolLM2, started on this loop; closed at the end."""
    made: list[GenerateModel] = []

    def make(**generate: Any) -> GenerateModel:
        config = ModelConfig(task="generate", warmup=[], generate=generate)
        model = GenerateModel(smollm2_dir() / "1", config)
        model.start()
        made.append(model)
        return model

    yield make
    for model in made:
        await model.close()


def _inputs(text: str, stream: bool = True, **sampling: Any) -> dict[str, np.ndarray]:
    return {
        "text_input": np.array([text], object),
        "stream": np.array([stream]),
        "sampling_parameters": np.array([json.dumps(sampling)], object),
        "exclude_input_in_output": np.array([True]),
        "return_num_output_tokens": np.array([True]),
        "return_finish_reason": np.array([True]),
    }


class Recorded:
    """A job's tokens and per-step logits, taken on the engine thread."""

    def __init__(self) -> None:
        self.logits: list[np.ndarray] = []

    def __call__(self, row: np.ndarray) -> None:
        self.logits.append(row.copy())

    @property
    def tokens(self) -> list[int]:
        return [int(np.argmax(row)) for row in self.logits]

    def first_tie(self) -> int:
        """The first step whose top-2 logit margin is under TIE (len when none)."""
        for step, row in enumerate(self.logits):
            top = np.partition(row, -2)[-2:]
            if top[1] - top[0] < TIE:
                return step
        return len(self.logits)


async def _run(model: GenerateModel, prompt: str, max_tokens: int) -> Recorded:
    tokens = model.tokenizer.encode(prompt, add_special_tokens=False).ids
    recorded = Recorded()
    job = Job(
        tokens, SamplingParams(max_tokens), TextStream(model.tokenizer), None, on_logits=recorded
    )
    async for _ in model.chunks(job):
        pass
    return recorded


def _matched(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


async def test_batched_logits_and_sixteen_greedy_streams_agree_with_alone(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_sequences=16, max_context=512)
    prompts = [CHAT.format(q) for q in QUESTIONS]
    steps = 24
    alone = [await _run(model, p, steps) for p in prompts]
    together = await asyncio.gather(*(_run(model, p, steps) for p in prompts))
    matched = []
    for one, many in zip(alone, together, strict=True):
        same = _matched(one.tokens, many.tokens)
        matched.append(same)
        # Until the texts part, each step saw the same inputs: its logits agree.
        for step in range(min(same + 1, len(one.logits), len(many.logits))):
            assert np.abs(one.logits[step] - many.logits[step]).max() < TIE, step
        if same < min(len(one.tokens), len(many.tokens)):
            assert same >= one.first_tie(), (same, one.first_tie())
        else:
            assert len(one.tokens) == len(many.tokens)
    print(f"matched prefix lengths of 16 batched greedy streams (of {steps}): {matched}")


async def test_stream_pieces_make_the_unary_text(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_context=256)
    inputs = _inputs(CHAT.format("Write the word café and a smiley emoji."), max_tokens=40)
    whole, _ = await model.submit(inputs, None, RequestContext())
    parts = [p async for p in model.stream(inputs, None, RequestContext())]
    assert parts[-1].final and not any(p.final for p in parts[:-1])
    text = "".join(p.outputs["text_output"][0].decode() for p in parts)
    assert text.encode() == whole["text_output"][0]
    assert parts[-1].outputs["num_output_tokens"][0] == whole["num_output_tokens"][0]
    assert whole["finish_reason"][0] in (b"stop", b"length")
    # Not asked to stream: one final part with the whole answer, as unary.
    single = [
        p
        async for p in model.stream({**inputs, "stream": np.array([False])}, None, RequestContext())
    ]
    assert len(single) == 1 and single[0].final
    assert single[0].outputs["text_output"][0] == whole["text_output"][0]


async def test_seeded_sampling_repeats_alone_and_batched(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_context=256)
    inputs = _inputs(CHAT.format("Tell me a story."), max_tokens=20, temperature=1.0, seed=5)
    first, _ = await model.submit(inputs, None, RequestContext())
    again, _ = await model.submit(inputs, None, RequestContext())
    others = [_inputs(CHAT.format(q), max_tokens=20) for q in QUESTIONS[:3]]
    batched = await asyncio.gather(
        model.submit(inputs, None, RequestContext()),
        *(model.submit(o, None, RequestContext()) for o in others),
    )
    assert first["text_output"][0] == again["text_output"][0] == batched[0][0]["text_output"][0]
    other, _ = await model.submit(
        _inputs(CHAT.format("Tell me a story."), max_tokens=20, temperature=1.0, seed=6),
        None,
        RequestContext(),
    )
    assert other["text_output"][0] != first["text_output"][0]


async def test_stop_string_and_max_tokens_end_with_their_reason(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_context=256)
    prompt = CHAT.format("What is the capital of France?")
    full, _ = await model.submit(_inputs(prompt, max_tokens=12), None, RequestContext())
    text = full["text_output"][0].decode()
    assert full["finish_reason"][0] == b"length" and full["num_output_tokens"][0] == 12
    stop = text.split()[2]
    cut, _ = await model.submit(_inputs(prompt, max_tokens=12, stop=[stop]), None, RequestContext())
    assert cut["finish_reason"][0] == b"stop"
    assert cut["text_output"][0].decode() == text[: text.index(stop)]


async def test_too_long_names_both_numbers_and_full_queue_is_exhausted(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_sequences=1, max_context=64, max_queue_size=1)
    with pytest.raises(InvalidArgument) as caught:
        await model.submit(_inputs("Hello there", max_tokens=63), None, RequestContext())
    assert "max_tokens 63" in caught.value.message and "max_context 64" in caught.value.message
    # The model's default max_tokens (256 here) shrinks to the room a prompt leaves.
    default = {"text_input": np.array(["Hello there"], object)}
    default["return_num_output_tokens"] = np.array([True])
    outputs, _ = await model.submit(default, None, RequestContext())
    assert 0 < outputs["num_output_tokens"][0] <= 64 - 2
    # A long prompt is tokenized off the loop, then measured the same way.
    with pytest.raises(InvalidArgument, match=r"prompt of \d{4} tokens plus max_tokens 5"):
        await model.submit(_inputs("word " * 4000, max_tokens=5), None, RequestContext())
    # The engine is held inside its first step, so the slot stays taken.
    gate = threading.Event()
    held = _held(model, "One", 3, gate)
    running = asyncio.ensure_future(_drain(model.chunks(held)))
    await _until(lambda: model.engine.running == 1)
    queued = asyncio.ensure_future(
        model.submit(_inputs("Two", max_tokens=5), None, RequestContext())
    )
    await _until(lambda: model.depth == 1)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        await model.submit(_inputs("Three", max_tokens=5), None, RequestContext())
    gate.set()
    await asyncio.gather(running, queued)


async def test_cancelled_and_expired_requests_free_their_slots(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_sequences=1, max_context=256)
    gate = threading.Event()
    chunks = model.chunks(_held(model, "Count to one hundred:", 200, gate))
    first = asyncio.ensure_future(anext(chunks))
    await _until(lambda: model.engine.running == 1 and model.engine.reserved > 0)
    gate.set()
    await first
    await chunks.aclose()
    await _until(lambda: model.engine.running == 0 and model.engine.reserved == 0)
    # A request whose deadline passes while it waits for the one slot never runs.
    gate.clear()
    blocker = asyncio.ensure_future(_drain(model.chunks(_held(model, "Count:", 3, gate))))
    await _until(lambda: model.engine.running == 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.05
    late = asyncio.ensure_future(
        model.submit(_inputs("Late", max_tokens=5), deadline, RequestContext())
    )
    await _until(lambda: model.depth == 1 and loop.time() > deadline)
    gate.set()
    with pytest.raises(DeadlineExceeded, match="in the queue"):
        await late
    await blocker
    await _until(lambda: model.engine.reserved == 0 and model.engine.in_use == 0)


def _held(model: GenerateModel, prompt: str, max_tokens: int, gate: threading.Event) -> Job:
    """A job whose every step waits (on the engine thread) until `gate` is set."""
    tokens = model.tokenizer.encode(prompt).ids
    return Job(
        tokens,
        SamplingParams(max_tokens),
        TextStream(model.tokenizer),
        None,
        on_logits=lambda _row: gate.wait(30),
    )


async def _drain(chunks: AsyncIterator[Any]) -> None:
    async for _ in chunks:
        pass


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_close_finishes_running_requests_and_refuses_new_ones(
    make_model: Callable[..., GenerateModel],
) -> None:
    model = make_model(max_sequences=2, max_context=128)
    running = asyncio.ensure_future(
        model.submit(_inputs("1, 2, 3,", max_tokens=30), None, RequestContext())
    )
    await _until(lambda: model.engine.running == 1)
    await model.close()
    outputs, _ = await running
    assert outputs["finish_reason"][0] in (b"length", b"stop")
    with pytest.raises(Unavailable):
        await model.submit(_inputs("late", max_tokens=3), None, RequestContext())


async def test_device_cache_layout_gives_the_same_tokens(
    make_model: Callable[..., GenerateModel],
) -> None:
    """The OrtValue cache (CUDA's layout and slot copy), run here on the CPU device:
    the same greedy tokens as the numpy cache, across a slot move."""
    prompts = [CHAT.format(q) for q in QUESTIONS[:3]]
    lengths = (4, 16, 16)  # the first finishes early: the last slot moves into its hole

    async def tokens(model: GenerateModel) -> list[list[int]]:
        async def one(prompt: str, steps: int) -> list[int]:
            return (await _run(model, prompt, steps)).tokens

        return list(
            await asyncio.gather(*(one(p, n) for p, n in zip(prompts, lengths, strict=True)))
        )

    plain = make_model(max_sequences=4, max_context=256)
    device = make_model(max_sequences=4, max_context=256)
    decoder = device.engine.decoder
    decoder.cache = DeviceKvCache(decoder.shape, 4, 256, "cpu", 0)
    assert await tokens(device) == await tokens(plain)


async def test_bench_reports_every_level() -> None:
    levels = await bench(smollm2_dir() / "1", [1, 2], requests=1, max_tokens=4)
    assert [level.streams for level in levels] == [1, 2]
    for level in levels:
        assert level.requests == level.streams and 0 < level.output_tokens <= 4 * level.streams
        assert level.tokens_per_second > 0 and level.ttft_p99_ms >= level.ttft_p50_ms > 0


def test_a_version_without_its_decoder_files_fails_to_load_with_the_reason(
    tmp_path: Path,
) -> None:
    config = ModelConfig(task="generate", warmup=[])
    with pytest.raises(LoadError, match="genai_config.json"):
        open_generate(tmp_path, config)
    (tmp_path / "genai_config.json").write_text('{"model": {"decoder": {}}}')
    with pytest.raises(LoadError, match="not a decoder config"):
        open_generate(tmp_path, config)
    source = smollm2_dir() / "1" / "genai_config.json"
    (tmp_path / "genai_config.json").write_text(source.read_text())
    with pytest.raises(LoadError, match="tokenizer.json"):
        open_generate(tmp_path, config)


async def test_prompts_prefilled_in_chunks_between_steps_agree_with_alone(
    make_model: Callable[..., GenerateModel],
) -> None:
    """Prompts fed 8 tokens a step while others decode (and leave, so the prompt being
    fed moves down a slot): the same logits as one whole prefill alone. Prompt 7 has
    15 tokens: 8-token chunks would end in a 1-token one, which drifted (0.56 at its
    third step) until chunks kept 2 tokens for the last."""
    model = make_model(max_sequences=8, max_context=256)
    prompts = [CHAT.format(q) for q in QUESTIONS[:8]]
    steps = [3 if i % 2 else 12 for i in range(8)]
    alone = [await _run(model, p, n) for p, n in zip(prompts, steps, strict=True)]
    model.engine.prefill_chunk = 8
    together = await asyncio.gather(
        *(_run(model, p, n) for p, n in zip(prompts, steps, strict=True))
    )
    for one, many in zip(alone, together, strict=True):
        same = _matched(one.tokens, many.tokens)
        for step in range(min(same + 1, len(one.logits), len(many.logits))):
            assert np.abs(one.logits[step] - many.logits[step]).max() < TIE, step
        if same < min(len(one.tokens), len(many.tokens)):
            assert same >= one.first_tie(), (same, one.first_tie())
    await _until(lambda: model.engine.running == 0 and model.engine.reserved == 0)
