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
        if self.params.greedy:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / self.params.temperature
        top_k = self.params.top_k
        if 0 < top_k < scores.shape[0]:
            candidates = np.argpartition(scores, -top_k)[-top_k:]
        else:
            candidates = np.arange(scores.shape[0])
        # Highest first; ties broken by token id, so the order never depends on the sort.
        order = candidates[np.lexsort((candidates, -scores[candidates]))]
        chosen = scores[order]
        probs = np.exp(chosen - chosen[0])
        probs /= probs.sum()
        if self.params.top_p < 1.0:
            # Keep the smallest head whose mass reaches top_p (at least one token).
            keep = int(np.searchsorted(np.cumsum(probs), self.params.top_p)) + 1
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        return int(order[self.rng.choice(len(order), p=probs)])


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
