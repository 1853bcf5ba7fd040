"""The decoder-state contract between the search (greedy, sampling, beam) and whatever runs the model.

Only the interface lives here; the ONNX implementation is `session.py`, a torch one for tests is
`tests/torch_state.py`, and scripted fakes live in the tests.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class DecoderState(Protocol):
    """A model plus its KV cache and attention mask, one row per sequence being decoded."""

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(rows, prompt_len) int64 left-padded ids and mask -> (rows, vocab) float32 logits of the last position."""
        ...

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """(rows,) int64, one new token per row (mask grows by a column of 1s) -> (rows, vocab) float32 logits."""
        ...

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        """(rows, n) int64, n new positions per row in one run -> (rows, n, vocab) float32 logits of each.
        Only prompt lookup calls it; a state that cannot may leave it out."""
        ...

    def rewind(self, count: int) -> None:
        """Every row forgets its last `count` positions (drafted tokens the model did not confirm)."""
        ...

    def select(self, rows: np.ndarray) -> None:
        """Row i of the cache and mask becomes old row rows[i]: expands (np.repeat for beams), reorders, drops rows."""
        ...
