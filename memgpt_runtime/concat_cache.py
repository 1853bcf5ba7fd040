"""The KV cache of "concat" graphs: past in, past + new positions out, in two buffers that take turns.

The cache lives in preallocated buffers bound to the session with IO binding: the graph reads the past from
one buffer and writes the present (past + new positions) into the other, and the two swap after each step,
so a step allocates nothing. Beam reordering copies only the rows that moved. Implements `DecoderState`.
For an encoder-decoder model it also binds the encoder's cross attention (`encoder.CrossAttention`) at every
run and reorders it with the cache.
"""

from __future__ import annotations

import numpy as np


class ConcatCache:
    """The KV cache, attention mask and positions of `rows` sequences; implements `DecoderState`."""

    def __init__(self, decoder, max_rows: int, max_length: int, cross=None):
        kv = decoder.kv_cache
        self._cross = cross  # encoder-decoder models: the `CrossAttention` bound with every run, else None
        self._session = decoder.session
        self._graph = decoder.graph
        self._vocab = decoder.vocab_size
        self._layers = kv.num_layers
        self._row_shape = (kv.num_kv_heads, kv.head_size)  # one position of one row: (heads, head_size)
        self._past_names, self._present_names = kv.past_names(), kv.present_names()
        capacity = max_rows * max_length * kv.num_kv_heads * kv.head_size
        # subtle: np.empty maps pages lazily, so the resident size grows with the positions actually used.
        self._buffers = [[np.empty(capacity, np.float32) for _ in self._past_names] for _ in range(2)]
        self._mask_buffers = [np.empty(max_rows * max_length, np.int64) for _ in range(2)]
        self._step_logits = np.empty(max_rows * self._vocab, np.float32)
        self._tokens = np.empty(max_rows, np.int64)
        self._positions = np.zeros(max_rows, np.int64)
        self._binding = self._session.io_binding()
        self._current = 0  # which of the two buffer sets holds the cache
        self.rows = 0
        self.length = 0  # positions in the cache, padding included
        self._max_rows, self._max_length = max_rows, max_length

    # -- views of the flat buffers as contiguous arrays --------------------------------------------------

    def _cache(self, which: int, index: int, length: int) -> np.ndarray:
        size = self.rows * length * self._row_shape[0] * self._row_shape[1]
        heads, head_size = self._row_shape
        return self._buffers[which][index][:size].reshape(self.rows, heads, length, head_size)

    def _mask(self, which: int, length: int) -> np.ndarray:
        return self._mask_buffers[which][: self.rows * length].reshape(self.rows, length)

    # -- DecoderState --------------------------------------------------------------------------------------

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(rows, prompt_len) left-padded ids and mask -> (rows, vocab) logits of the last position."""
        rows, length = input_ids.shape
        if rows > self._max_rows or length > self._max_length:
            raise ValueError(f"prefill of {rows}x{length} exceeds the cache of {self._max_rows}x{self._max_length}")
        self.rows, self.length = rows, 0
        mask = self._mask(self._current, length)
        mask[:] = attention_mask
        # as transformers: position = number of real tokens before it; padding positions get 1
        positions = np.cumsum(attention_mask, axis=1) - 1  # (rows, prompt_len)
        positions[attention_mask == 0] = 1
        self._positions[:rows] = positions[:, -1]
        logits = np.empty((rows, length, self._vocab), np.float32)
        self._run(np.ascontiguousarray(input_ids, np.int64), mask, positions, logits)
        return logits[:, -1, :]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """(rows,) new tokens -> (rows, vocab) logits; every row's mask grows by one real position."""
        rows, length = self.rows, self.length
        if length + 1 > self._max_length:
            raise ValueError(f"the cache holds at most {self._max_length} positions")
        other = 1 - self._current
        mask = self._mask(other, length + 1)
        mask[:, :length] = self._mask(self._current, length)
        mask[:, length] = 1
        self._current = other
        ids = self._tokens[:rows].reshape(rows, 1)
        ids[:, 0] = tokens
        positions = self._positions[:rows]
        positions += 1
        logits = self._step_logits[: rows * self._vocab].reshape(rows, 1, self._vocab)
        # subtle: _run reads the past from the *other* buffer set, which still holds it
        self._run(ids, mask, positions.reshape(rows, 1), logits)
        return logits[:, 0, :]

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        """(rows, n) new tokens in one run -> (rows, n, vocab) logits of each; the masks grow by n real positions."""
        rows, length = self.rows, self.length
        n = tokens.shape[1]
        if length + n > self._max_length:
            raise ValueError(f"the cache holds at most {self._max_length} positions")
        other = 1 - self._current
        mask = self._mask(other, length + n)
        mask[:, :length] = self._mask(self._current, length)
        mask[:, length:] = 1
        self._current = other
        positions = self._positions[:rows, None] + np.arange(1, n + 1)  # (rows, n)
        self._positions[:rows] += n
        logits = np.empty((rows, n, self._vocab), np.float32)
        self._run(np.ascontiguousarray(tokens, np.int64), mask, positions, logits)
        return logits

    def rewind(self, count: int) -> None:
        """Every row forgets its last `count` positions: cache and mask are copied, shorter, into the other buffers."""
        rows, keep = self.rows, self.length - count
        other = 1 - self._current
        for index in range(len(self._past_names)):
            self._cache(other, index, keep)[:] = self._cache(self._current, index, self.length)[:, :, :keep]
        self._mask(other, keep)[:] = self._mask(self._current, self.length)[:, :keep]
        self._positions[:rows] -= count
        self._current, self.length = other, keep

    def select(self, rows: np.ndarray) -> None:
        """Row i becomes old row rows[i]: expands, reorders or drops rows of the cache, mask and positions."""
        rows = np.asarray(rows, np.int64)
        if self._cross is not None:
            self._cross.select(rows)
        old_rows, length = self.rows, self.length
        if len(rows) == old_rows:
            moved = np.flatnonzero(rows != np.arange(old_rows))
            if len(moved) == 0:
                return
            sources = rows[moved]
            for index in range(len(self._past_names)):
                cache = self._cache(self._current, index, length)
                cache[moved] = cache[sources]  # fancy indexing copies the sources first, so overlaps are safe
            mask = self._mask(self._current, length)
            mask[moved] = mask[sources]
            self._positions[moved] = self._positions[sources]
            return
        if len(rows) > self._max_rows:
            raise ValueError(f"select of {len(rows)} rows exceeds the cache of {self._max_rows}")
        other = 1 - self._current
        olds = [self._cache(self._current, i, length) for i in range(len(self._past_names))]
        old_mask = self._mask(self._current, length)
        self.rows = len(rows)
        for index, old in enumerate(olds):
            np.take(old, rows, axis=0, out=self._cache(other, index, length))
        np.take(old_mask, rows, axis=0, out=self._mask(other, length))
        self._positions[: self.rows] = self._positions[:old_rows][rows]
        self._current = other

    # -- one run of the graph ------------------------------------------------------------------------------

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, logits: np.ndarray) -> None:
        """Run the graph on `ids`, reading the cache of `self.length` positions and appending to it."""
        rows, new = ids.shape
        past_set = self._current if self.length == 0 else 1 - self._current
        present_set = self._current
        past_len, total = self.length, self.length + new
        binding, graph = self._binding, self._graph
        binding.bind_cpu_input(graph.input_ids, ids)
        if graph.attention_mask:
            binding.bind_cpu_input(graph.attention_mask, mask)
        if graph.position_ids:
            binding.bind_cpu_input(graph.position_ids, np.ascontiguousarray(positions, np.int64))
        if self._cross is not None:
            self._cross.bind(binding)
        for index, (past, present) in enumerate(zip(self._past_names, self._present_names)):
            past_view = self._cache(past_set, index, past_len)
            present_view = self._cache(present_set, index, total)
            binding.bind_input(past, "cpu", 0, np.float32, past_view.shape, past_view.ctypes.data)
            binding.bind_output(present, "cpu", 0, np.float32, present_view.shape, present_view.ctypes.data)
        binding.bind_output(graph.logits, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        self._session.run_with_iobinding(binding)
        self.length = total
