"""The KV cache of "shared" graphs: one buffer per layer and kind, bound as both past and present.

The graph (GroupQueryAttention with a shared past/present buffer) writes each new position in place, so a step
copies no cache at all. Rows keep their tokens from position 0: a left-padded prompt batch (as transformers
takes it) is moved to right padding on prefill, and each row's length travels to the graph as `seqlens_k`;
attention and rotary positions then see exactly the real tokens, as transformers' masked left padding does.
Beam reordering copies only the rows that moved, and only their filled positions. Implements `DecoderState`.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError


class SharedCache:
    def __init__(self, decoder, max_rows: int, max_length: int):
        kv, graph = decoder.kv_cache, decoder.graph
        self._session, self._graph = decoder.session, graph
        self._names = [n.format(i=i) for i in range(kv.num_layers) for n in (kv.past_key, kv.past_value)]
        self._present = [n.format(i=i) for i in range(kv.num_layers) for n in (kv.present_key, kv.present_value)]
        # (rows, kv_heads, capacity, head_size) per name; np.empty maps pages lazily, so memory follows use
        self._buffers = [np.empty((max_rows, kv.num_kv_heads, max_length, kv.head_size), np.float32) for _ in self._names]
        self._lengths = np.zeros(max_rows, np.int64)  # tokens held by each row
        self._seqlens = np.zeros(max_rows, np.int32)
        self._total = np.zeros((), np.int32)
        self._last = np.zeros(max_rows, np.int64)
        self._tokens = np.zeros((max_rows, 1), np.int64)
        self._logits = np.empty((max_rows, decoder.vocab_size), np.float32)
        self._binding = self._session.io_binding()
        self._max_rows, self._max_length = max_rows, max_length
        self._bound_rows = -1  # the row count the cache buffers are bound for
        self._bound_shape = None  # the shape of the step inputs bound in place, None after a prefill
        self.rows = 0

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(rows, width) left-padded ids and mask -> (rows, vocab) logits of each row's last token."""
        rows, width = input_ids.shape
        lengths = attention_mask.sum(axis=1).astype(np.int64)  # (rows,)
        left_padded = attention_mask == (np.arange(width)[None, :] >= (width - lengths)[:, None])
        if not left_padded.all() or lengths.min() < 1:
            raise UsageError("the attention mask must be left padding (zeros, then ones) with a token in every row")
        if rows > self._max_rows or lengths.max() > self._max_length:
            raise ValueError(f"prefill of {rows}x{lengths.max()} exceeds the cache of {self._max_rows}x{self._max_length}")
        longest = int(lengths.max())
        # (rows, longest): each row's real tokens first, then padding (any id; the graph never attends to it)
        start = (width - lengths)[:, None]
        right = np.take_along_axis(input_ids, np.minimum(start + np.arange(longest)[None, :], width - 1), axis=1)
        self.rows = rows
        self._lengths[:rows] = lengths
        self._seqlens[:rows] = lengths - 1
        self._last[:rows] = lengths - 1
        self._total[...] = longest
        self._run(np.ascontiguousarray(right, np.int64))
        return self._logits[:rows]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """(rows,) new tokens -> (rows, vocab) logits; each is written at its row's next position."""
        rows = self.rows
        lengths = self._lengths[:rows]
        if lengths.max() + 1 > self._max_length:
            raise ValueError(f"the cache holds at most {self._max_length} positions")
        self._tokens[:rows, 0] = tokens
        self._seqlens[:rows] = lengths
        self._last[:rows] = 0
        self._total[...] = lengths.max() + 1
        self._run(self._tokens[:rows], in_place=True)
        lengths += 1
        return self._logits[:rows]

    def select(self, rows: np.ndarray) -> None:
        """Row i becomes old row rows[i]: expands, reorders or drops rows of the cache."""
        rows = np.asarray(rows, np.int64)
        old = self.rows
        filled = int(self._lengths[:old].max())  # positions worth copying
        if len(rows) == old:
            moved = np.flatnonzero(rows != np.arange(old))
            if len(moved) == 0:
                return
            targets, sources = moved, rows[moved]
        else:
            if len(rows) > self._max_rows:
                raise ValueError(f"select of {len(rows)} rows exceeds the cache of {self._max_rows}")
            targets, sources = np.arange(len(rows)), rows
        plan, snapshot_rows = copy_plan(targets.tolist(), sources.tolist())
        for buffer in self._buffers:
            snapshots = {row: buffer[row, :, :filled].copy() for row in snapshot_rows}
            for target, source, from_snapshot in plan:
                buffer[target, :, :filled] = snapshots[source] if from_snapshot else buffer[source, :, :filled]
        self._lengths[targets] = self._lengths[sources]
        self.rows = len(rows)

    def _run(self, ids: np.ndarray, in_place: bool = False) -> None:
        """Run the graph. Bindings point at this object's arrays (no copy), so steps rebind only on a new shape."""
        rows = self.rows
        binding, graph = self._binding, self._graph
        if not in_place or self._bound_shape != ids.shape:
            binding.bind_cpu_input(graph.input_ids, ids)
            binding.bind_cpu_input(graph.seqlens_k, self._seqlens[:rows])
            binding.bind_cpu_input(graph.total_sequence_length, self._total)
            binding.bind_cpu_input(graph.last_index, self._last[:rows])
            self._bound_shape = ids.shape if in_place else None
        if self._bound_rows != rows:
            for name, present, buffer in zip(self._names, self._present, self._buffers):
                view = buffer[:rows]  # a contiguous prefix: rows are the outer axis
                binding.bind_input(name, "cpu", 0, np.float32, view.shape, view.ctypes.data)
                binding.bind_output(present, "cpu", 0, np.float32, view.shape, view.ctypes.data)
            logits = self._logits[:rows]
            binding.bind_output(graph.logits, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
            self._bound_rows = rows
        self._session.run_with_iobinding(binding)


def copy_plan(targets: list[int], sources: list[int]) -> tuple[list[tuple[int, int, bool]], list[int]]:
    """Order the row copies `targets[i] <- sources[i]` so that every row is read before it is overwritten.

    Returns the steps (target, source, read the source's snapshot) and the rows to snapshot first: one per
    cycle of the copies (a swap, say); beam search's copies rarely form one, so it usually copies each row
    once, with no temporary. Copies of a row onto itself are dropped.
    """
    pending = {t: s for t, s in zip(targets, sources) if t != s}
    readers: dict[int, int] = {}
    for s in pending.values():
        readers[s] = readers.get(s, 0) + 1
    steps: list[tuple[int, int, bool]] = []
    snapshots: list[int] = []
    while pending:
        ready = [t for t in pending if readers.get(t, 0) == 0]
        if not ready:  # every pending target is still some copy's source: a cycle; snapshot one row to break it
            row = next(iter(pending))
            snapshots.append(row)
            readers[row] = 0
            continue
        for t in ready:
            s = pending.pop(t)
            steps.append((t, s, s in snapshots))
            readers[s] -= 1
    return steps, snapshots
