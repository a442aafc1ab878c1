"""Token choice, stop strings, the sampling_parameters JSON and messages of generate
requests, and the host KV cache's slot release."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.inference.tasks.generate.chat import ChatTemplate, Message
from services.inference.tasks.generate.decoder import DecoderShape, KvCache
from services.inference.tasks.generate.params import parse_messages, parse_request, parse_sampling
from services.inference.tasks.generate.sampling import Sampler, SamplingParams, StopText


def _logits(seed: int = 0, vocab: int = 500) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=vocab).astype(np.float32)


def test_greedy_is_the_argmax_whatever_the_seed() -> None:
    logits = _logits()
    for params in (SamplingParams(8), SamplingParams(8, seed=3), SamplingParams(8, 0.7, top_k=1)):
        assert Sampler(params)(logits) == int(np.argmax(logits))


def test_seeded_sampling_repeats_and_seeds_differ() -> None:
    params = SamplingParams(8, temperature=1.5, top_p=0.95, top_k=100, seed=42)
    rows = [_logits(i) for i in range(50)]
    one, two = Sampler(params), Sampler(params)
    first = [one(row) for row in rows]
    assert first == [two(row) for row in rows]
    other = Sampler(SamplingParams(8, temperature=1.5, top_p=0.95, top_k=100, seed=43))
    assert first != [other(row) for row in rows]
    # Not the argmax every time: the knobs do sample.
    assert first != [int(np.argmax(row)) for row in rows]


def test_top_k_and_top_p_keep_only_the_head() -> None:
    logits = np.array([5.0, 4.0, 3.0, -10.0, -10.0], np.float32)
    picks = {Sampler(SamplingParams(1, 5.0, top_k=2, seed=s))(logits) for s in range(200)}
    assert picks == {0, 1}
    # Probabilities at T=1: ~0.66, 0.24, 0.09: top_p 0.8 keeps the first two.
    picks = {Sampler(SamplingParams(1, 1.0, top_p=0.8, seed=s))(logits) for s in range(200)}
    assert picks == {0, 1}


def test_a_wide_nucleus_is_found_beyond_the_first_candidates() -> None:
    """A flat distribution's top-p head holds thousands of tokens: the search for it
    grows past its first 256 and still keeps exactly the smallest head."""
    logits = np.random.default_rng(1).normal(scale=0.1, size=5000).astype(np.float32)
    order = np.lexsort((np.arange(5000), -logits.astype(np.float64)))
    probs = np.exp(logits.astype(np.float64) - logits.max())
    mass = np.cumsum(probs[order]) / probs.sum()
    head = set(order[: int(np.searchsorted(mass, 0.9)) + 1].tolist())
    assert len(head) > 1000
    picks = [Sampler(SamplingParams(1, 1.0, top_p=0.9, seed=s))(logits) for s in range(300)]
    assert set(picks) <= head
    rank = {int(token): i for i, token in enumerate(order)}
    assert max(rank[p] for p in picks) > 256


def test_stop_strings_cut_the_text_and_hold_back_a_partial_match() -> None:
    stop = StopText(["END", "\n\n"])
    out = [stop.feed(p) for p in ("Hello", " E", "N", "D and more")]
    assert out == [("Hello", False), (" ", False), ("", False), ("", True)]
    assert stop.text == "Hello "
    # A held tail that never became a stop string goes out with the next piece or at the end.
    stop = StopText(["END"])
    assert stop.feed("a E") == ("a ", False)
    assert stop.feed("x") == ("Ex", False)
    assert stop.feed("E") == ("", False)
    assert stop.flush() == "E"
    assert StopText([]).feed("any") == ("any", False)


def test_sampling_parameters_take_vllm_keys_and_numbers_as_strings() -> None:
    text = json.dumps(
        {"max_tokens": "12", "temperature": "0.5", "top_p": 0.9, "top_k": -1, "seed": 7}
    )
    params = parse_sampling(text, 256)
    assert params == SamplingParams(12, 0.5, 0.9, 0, 7, ())
    assert parse_sampling(None, 33).max_tokens == 33
    assert parse_sampling('{"stop": "x"}', 5).stop == ("x",)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{not json", ["expected a JSON object"]),
        ("[1, 2]", ["expected a JSON object", "list"]),
        ('{"max_token": 5}', ["'max_token'", "max_tokens", "got 5"]),
        ('{"temperature": -1}', ["'temperature'", "greater than or equal to 0", "got -1"]),
        ('{"top_p": 0}', ["'top_p'", "greater than 0"]),
        ('{"max_tokens": 0}', ["'max_tokens'", "greater than or equal to 1", "got 0"]),
        ('{"seed": "abc"}', ["'seed'", "integer", 'got "abc"']),
        ('{"stop": [""]}', ["'stop'", "stop strings of 1 to"]),
    ],
)
def test_bad_sampling_parameters_name_key_expected_and_got(text: str, names: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_sampling(text, 16)
    for name in names:
        assert name in caught.value.message, caught.value.message


def test_messages_are_checked_and_rendered_with_the_template() -> None:
    template = ChatTemplate(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}",
        {},
    )
    messages = parse_messages(json.dumps([{"role": "user", "content": "hi"}]))
    assert messages == [Message("user", "hi")]
    assert template.render(messages) == "<user>hi\n<assistant>"
    inputs = {"messages": np.array([json.dumps([{"role": "user", "content": "hi"}])], object)}
    request = parse_request(inputs, 9, template.render)
    assert request.chat and request.prompt == "<user>hi\n<assistant>"
    assert request.sampling.max_tokens == 9
    for bad, words in (
        ("{}", "non-empty JSON list"),
        ('[{"role": "user"}]', "keys ['content', 'role']"),
        ('[{"role": "robot", "content": "x"}]', "'robot'"),
        ('[{"role": "user", "content": 3}]', "expected a string, got int"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            parse_messages(bad)
        assert words in caught.value.message


def test_exactly_one_of_text_input_and_messages() -> None:
    text = np.array(["hello"], object)
    messages = np.array(['[{"role": "user", "content": "x"}]'], object)
    with pytest.raises(InvalidArgument, match="got neither"):
        parse_request({}, 4, None)
    with pytest.raises(InvalidArgument, match="got both"):
        parse_request({"text_input": text, "messages": messages}, 4, None)
    with pytest.raises(InvalidArgument, match="no chat template"):
        parse_request({"messages": messages}, 4, None)
    flags = {"text_input": text, "exclude_input_in_output": np.array([True])}
    request = parse_request(flags, 4, None)
    assert request.exclude_input and not request.stream and request.prompt == "hello"


def test_a_released_cache_slot_reads_as_zeros_and_the_others_keep_theirs() -> None:
    shape = DecoderShape(
        layers=2, kv_heads=2, head_dim=64, vocab_size=10, context_length=0, eos_token_ids=(0,)
    )
    cache = KvCache(shape, slots=3, context=64)
    for buffer in cache.buffers:
        buffer[:] = 1.0
    cache.release(1, 2)
    for buffer in cache.buffers:
        assert buffer[0].min() == 1.0 and not buffer[1:].any()
