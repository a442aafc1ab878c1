"""Choosing the next token from a sequence's logits, and where its text stops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks tokens (the keys of vLLM's sampling_parameters)."""

    max_tokens: int
    # 0 is greedy (argmax); the other knobs apply only when sampling.
    temperature: float = 0.0
    top_p: float = 1.0
    # 0 means no limit.
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        """Whether the choice is the argmax, whatever the other knobs say."""
        return self.temperature == 0.0 or self.top_k == 1


class Sampler:
    """One request's token choice; its own numpy Generator makes a seeded run
    reproducible whatever else runs in the same batch."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        params = self.params
        if params.greedy:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / params.temperature
        vocab = scores.shape[0]
        k = params.top_k if 0 < params.top_k < vocab else vocab
        weights = np.exp(scores - scores.max())
        pool = np.argpartition(scores, -k)[-k:] if k < vocab else None
        total = weights.sum() if pool is None else weights[pool].sum()
        if params.top_p >= 1.0:
            if pool is None:
                return int(self.rng.choice(vocab, p=weights / total))
            # Token-id order, so that the draw never depends on argpartition's order.
            pool.sort()
            return int(pool[self.rng.choice(k, p=weights[pool] / total)])
        return self._nucleus(scores, weights, total, k)

    def _nucleus(self, scores: np.ndarray, weights: np.ndarray, total: float, k: int) -> int:
        """Top-p over the k best: the smallest head whose mass reaches top_p. The head
        is found among the best n tokens, n growing from 256, so that a step sorts a few
        hundred tokens rather than the whole vocabulary."""
        vocab = scores.shape[0]
        n = min(k, 256)
        while True:
            head = np.argpartition(scores, -n)[-n:] if n < vocab else np.arange(vocab)
            # Highest first; ties broken by token id, so the order never depends on the sort.
            head = head[np.lexsort((head, -scores[head]))]
            mass = np.cumsum(weights[head]) / total
            if mass[-1] >= self.params.top_p or n >= k:
                keep = min(int(np.searchsorted(mass, self.params.top_p)) + 1, n)
                chosen = head[:keep]
                probs = weights[chosen] / weights[chosen].sum()
                return int(chosen[self.rng.choice(keep, p=probs)])
            n = min(k, n * 4)


class StopText:
    """Cuts generated text at the first stop string, holding back any tail that may
    yet grow into one, so a streamed delta never shows part of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        # Characters of `text` handed out so far.
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that can go out now, and whether a stop string ended it."""
        if not self.stops:
            self.text += piece
            self.sent = len(self.text)
            return piece, False
        start = max(0, len(self.text) - self.longest + 1)
        self.text += piece
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if found:
            end = min(found)
            out = self.text[self.sent : end]
            self.text = self.text[:end]
            self.sent = end
            return out, True
        hold = self._held_tail()
        out = self.text[self.sent : len(self.text) - hold]
        self.sent = len(self.text) - hold
        return out, False

    def flush(self) -> str:
        """What was held back, once the sequence ended for another reason."""
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out

    def _held_tail(self) -> int:
        """Length of the longest suffix of the text that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:n]):
                    longest = n
                    break
        return min(longest, len(self.text) - self.sent)
