"""The API-key label of a model's token counters, bounded per model.

Key ids come from clients' keys, so the distinct labels a model keeps are capped:
the first MAX_KEYS ids get a series each, later ones are counted together as OTHER,
and calls without a key as ANONYMOUS.
"""

from __future__ import annotations

import threading

# Distinct API key ids counted per model; the rest are counted as OTHER.
MAX_KEYS = 256
ANONYMOUS = "anonymous"
OTHER = "other"


class KeyLabels:
    """Maps an API key id to its label; called from the batcher's and engine's threads."""

    def __init__(self, limit: int = MAX_KEYS) -> None:
        self._limit = limit
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key_id: str) -> str:
        if not key_id:  # one fixed label, not counted toward the bound
            return ANONYMOUS
        with self._lock:
            if key_id in self._keys:
                return key_id
            if len(self._keys) < self._limit:
                self._keys.add(key_id)
                return key_id
        return OTHER
