"""The KV of recently finished sequences, kept so that a prompt that starts with one (the next turn of a chat)
skips computing it again: a byte-bounded LRU of (token ids, per-layer keys and values).

A lookup takes the entry sharing the longest common prefix with the prompt (at least `MIN_SHARED` tokens) and
removes it: the request that takes it extends it in place, and puts its own longer sequence back when it ends.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

MIN_SHARED = 16  # below this, recomputing is as cheap as copying


class PrefixStore:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[np.ndarray, list[np.ndarray]]] = OrderedDict()
        self._next = 0
        self.bytes = 0

    def put(self, tokens: np.ndarray, kv: list[np.ndarray]) -> None:
        """Keep the KV of `tokens` (every layer and kind, (kv_heads, len(tokens), head_size) each)."""
        size = sum(part.nbytes for part in kv)
        if size > self.max_bytes or len(tokens) < MIN_SHARED:
            return
        while self.bytes + size > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self.bytes -= sum(part.nbytes for part in old)
        self._entries[self._next] = (np.array(tokens, np.int64), kv)
        self._next += 1
        self.bytes += size

    def take(self, prompt: np.ndarray) -> tuple[list[np.ndarray], int] | None:
        """(kv, shared length) of the entry sharing the longest prefix with `prompt`, removed; None if none shares
        at least MIN_SHARED tokens. Only the first `shared` positions of kv match the prompt."""
        best, best_len = None, MIN_SHARED - 1
        for key, (tokens, _) in self._entries.items():
            n = min(len(tokens), len(prompt))
            differ = np.flatnonzero(tokens[:n] != prompt[:n])
            shared = int(differ[0]) if len(differ) else n
            if shared > best_len:
                best, best_len = key, shared
        if best is None:
            return None
        _, kv = self._entries.pop(best)
        self.bytes -= sum(part.nbytes for part in kv)
        return kv, best_len

    def __len__(self) -> int:
        return len(self._entries)
