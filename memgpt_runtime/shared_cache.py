"""The KV cache of "shared" graphs for one generation: `SlotCache` slots 0..rows as a `DecoderState`.

The graph (GroupQueryAttention with a shared past/present buffer) writes each new position in place, so a step
copies no cache at all. Rows keep their tokens from position 0: a left-padded prompt batch (as transformers
takes it) is moved to right padding on prefill, and each row's length travels to the graph as `seqlens_k`;
attention and rotary positions then see exactly the real tokens, as transformers' masked left padding does.
The prompt runs in chunks of `chunk` positions from its start, as the engine runs it, so that a request's
answer is the same here and there. Beam reordering copies only the rows that moved.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError
from .slots import SlotCache


class SharedCache:
    def __init__(self, decoder, max_rows: int, max_length: int, chunk: int):
        # subtle: a chunk writes all its positions in every row, padding included, so the capacity is rounded up
        capacity = -(-max_length // chunk) * chunk
        self._slots = SlotCache(decoder, max_rows, capacity, min_rows=decoder.min_rows)
        self._chunk, self._max_rows, self._max_length = chunk, max_rows, max_length
        self._vocab = decoder.vocab_size
        self.rows = 0

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(rows, width) left-padded ids and mask -> (rows, vocab) logits of each row's last token."""
        rows, width = input_ids.shape
        lengths = attention_mask.sum(axis=1).astype(np.int64)  # (rows,)
        left_padded = attention_mask == (np.arange(width)[None, :] >= (width - lengths)[:, None])
        if not left_padded.all() or lengths.min() < 1:
            raise UsageError("the attention mask must be left padding (zeros, then ones) with a token in every row")
        if rows > self._max_rows or lengths.max() > self._max_length:
            raise ValueError(
                f"prefill of {rows}x{lengths.max()} exceeds the cache of {self._max_rows}x{self._max_length}"
            )
        longest = int(lengths.max())
        # (rows, longest): each row's real tokens first, then padding (any id; the graph never attends to it)
        start = (width - lengths)[:, None]
        right = np.take_along_axis(input_ids, np.minimum(start + np.arange(longest)[None, :], width - 1), axis=1)
        self.rows = rows
        self._slots.lengths[:rows] = 0
        first = min(self._chunk, longest)
        real = np.minimum(lengths, first)  # (rows,) real tokens of each row in the first chunk
        out = self._slots.prefill(0, right[:, :first], real, real - 1).copy()  # (rows, vocab)
        # subtle: onnxruntime's GroupQueryAttention takes more than one position over a past for one row only
        for row in np.flatnonzero(lengths > first):
            for begin in range(first, int(lengths[row]), self._chunk):
                end = min(begin + self._chunk, int(lengths[row]))
                out[row] = self._slots.prefill(row, right[row : row + 1, begin:end], [end - begin], [end - begin - 1])[
                    0
                ]
        return out

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """(rows,) new tokens -> (rows, vocab) logits; each is written at its row's next position."""
        return self._slots.decode(np.asarray(tokens, np.int64), np.ones(self.rows, bool))

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        """(rows, n) new positions -> (rows, n, vocab) logits of each; one run per row (GroupQueryAttention takes
        several positions over a past for one row at a time)."""
        tokens = np.asarray(tokens, np.int64)
        out = np.empty((self.rows, tokens.shape[1], self._vocab), np.float32)  # (rows, n, vocab)
        for row in range(self.rows):
            out[row] = self._slots.verify(row, tokens[row])
        return out

    def rewind(self, count: int) -> None:
        """Every row forgets its last `count` positions: its length goes back, the next write replaces them."""
        for row in range(self.rows):
            self._slots.truncate(row, int(self._slots.lengths[row]) - count)

    def select(self, rows: np.ndarray) -> None:
        """Row i becomes old row rows[i]: expands, reorders or drops rows of the cache."""
        rows = np.asarray(rows, np.int64)
        if len(rows) > self._max_rows:
            raise ValueError(f"select of {len(rows)} rows exceeds the cache of {self._max_rows}")
        self._slots.copy(np.arange(len(rows)), rows)
        self.rows = len(rows)
