"""Slots: the fused graph's shared KV buffer cut into rows that independent sequences hold and give back.

One (slots, kv_heads, capacity, head_size) buffer per layer and kind, bound as both past and present. A slot
keeps its sequence from position 0 and its length in `lengths`; the graph writes new positions in place at each
row's length (`seqlens_k`). Three kinds of run:
- `prefill(start, ids, ...)`: a chunk of new positions for a contiguous range of slots (one request's rows);
- `decode(tokens, live)`: one token for every slot below a high-water mark, in one run; slots that are not
  decoding (free, or still prefilling) take a scratch token written at their own length, which their next real
  write replaces, so rows never wait for each other;
- `copy(targets, sources)`: rows take other rows' positions (beam reorders, expansion to beams);
- `verify(slot, ids)`: several new positions of one slot, with the logits of every one (prompt lookup; the
  graph's `all_positions` value of `last_index`); `truncate` then drops the rejected ones: positions past a slot's
  length are never read and the next write replaces them.

A decode step runs at least `min_rows` rows: onnxruntime's 4-bit MatMulNBits (blocks of 32 or 64) computes a single
row by another kernel than two or more, with results that differ in the last bits (two or more rows agree at
every count), so for such a graph (`min_rows_of` finds out) a lone row runs beside a scratch row, and an answer
never depends on how many other rows shared its steps. Released slots hand their pages back to the system
(`madvise`), so resident memory follows the positions in use.
What this file leaves out: which request holds which slot (the engine's scheduler) and the search.
"""

from __future__ import annotations

import mmap

import numpy as np

_PAGE = mmap.PAGESIZE
BINDINGS = 16  # io bindings kept (slots.py `_binding_for`): the decode step's, and recent prompt and check runs


class SlotCache:
    def __init__(self, decoder, slots: int, capacity: int, min_rows: int = 1):
        kv, graph = decoder.kv_cache, decoder.graph
        self.min_rows = min_rows
        slots = max(slots, min_rows)
        self._session, self._graph = decoder.session, graph
        self._names, self._present = kv.past_names(), kv.present_names()
        shape = (slots, kv.num_kv_heads, capacity, kv.head_size)
        self._slot_bytes = int(np.prod(shape[1:])) * 4
        # anonymous maps: pages are committed on first write and returned by `release`
        self._maps = [mmap.mmap(-1, slots * self._slot_bytes) for _ in self._names]
        self._buffers = [np.frombuffer(m, np.float32).reshape(shape) for m in self._maps]
        self.lengths = np.zeros(slots, np.int64)  # positions each slot holds
        self._seqlens = np.zeros(slots, np.int32)
        self._total = np.zeros((), np.int32)
        self._last = np.zeros(slots, np.int64)
        self._tokens = np.zeros((slots, 1), np.int64)
        self._logits = np.empty((slots, decoder.vocab_size), np.float32)
        self._every = np.empty((0, decoder.vocab_size), np.float32)  # (positions, vocab) logits of a `verify`
        self._all_positions = graph.all_positions  # the last_index value that asks for every position, or None
        # one io binding per (purpose, start, rows), each with its cache views bound once: a prompt-lookup check
        # and the decode step after it would otherwise rebind every layer's past and present (2 x layers binds)
        self._bindings: dict[tuple, list] = {}  # key -> [binding, (address, shape) of the logits bound]
        self._step_bound = None  # rows of the decode inputs bound in place
        self.slots, self.capacity = slots, capacity

    @property
    def bytes_per_position(self) -> int:
        """KV bytes one position of one slot takes, every layer and kind."""
        return len(self._names) * self._slot_bytes // self.capacity

    def prefill(self, start: int, ids: np.ndarray, real: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Write `ids` (rows, n) at each row's current length in slots start..start+rows.

        `real` (rows,): each row's real tokens, at the start of the chunk; the graph writes all n positions, and
        the padding after the real ones is overwritten by the row's next write, never attended before it (causal
        attention). `last` (rows,): the position in the chunk whose logits to return. -> (rows, vocab) logits.
        """
        rows, n = ids.shape
        if rows * n < self.min_rows:  # one position alone takes the other kernel: a scratch row runs beside it
            below = start + 1 >= self.slots  # no slot after this one: the scratch row is the one before

            def pad(a: np.ndarray) -> np.ndarray:
                return np.concatenate([np.zeros_like(a), a] if below else [a, np.zeros_like(a)])

            logits = self.prefill(start - below, pad(ids), pad(np.asarray(real)), pad(np.asarray(last)))
            return logits[1:] if below else logits[:1]
        end = start + rows
        held = self.lengths[start:end]
        if (held + n).max() > self.capacity:
            raise ValueError(f"a chunk of {n} positions passes the slot capacity of {self.capacity}")
        self._seqlens[start:end] = held + n - 1
        self._total[...] = int((held + n).max())
        self._last[start:end] = last
        self._run(
            start,
            rows,
            np.ascontiguousarray(ids, np.int64),
            self._seqlens[start:end],
            self._last[start:end],
            self._logits[start:end],
        )
        held += real
        return self._logits[start:end]

    def verify(self, slot: int, ids: np.ndarray) -> np.ndarray:
        """Write `ids` (n,) at slot `slot`'s length in one run -> (n, vocab) logits of every one of the n positions.

        One slot only: onnxruntime's GroupQueryAttention takes several positions over a past for one row at a
        time. n >= min_rows, so the run never takes the single-row kernel (n rows of the matrix products).
        """
        n = len(ids)
        if self._all_positions is None:
            raise ValueError("the graph returns the logits of one position per row (no graph.all_positions)")
        if n < max(self.min_rows, 2):
            raise ValueError(f"verify takes at least {max(self.min_rows, 2)} positions, got {n}")
        held = int(self.lengths[slot])
        if held + n > self.capacity:
            raise ValueError(f"a run of {n} positions passes the slot capacity of {self.capacity}")
        if self._every.shape[0] < n:
            self._every = np.empty((n, self._every.shape[1]), np.float32)
        self._seqlens[slot] = held + n - 1
        self._total[...] = held + n
        self._last[slot] = self._all_positions
        self._run(
            slot,
            1,
            np.asarray(ids, np.int64).reshape(1, n),
            self._seqlens[slot : slot + 1],
            self._last[slot : slot + 1],
            self._every[:n],
        )
        self.lengths[slot] = held + n
        return self._every[:n]

    def decode(self, tokens: np.ndarray, live: np.ndarray) -> np.ndarray:
        """One token for each of slots 0..len(tokens): `live` (rows,) bool marks the slots that take their token
        and grow; the others get a scratch write at their length and keep it. -> (rows, vocab) logits."""
        asked = len(tokens)
        rows = max(asked, self.min_rows)
        if rows > asked:
            tokens, live = (
                np.append(tokens, np.zeros(rows - len(tokens), np.int64)),
                np.append(live, [False] * (rows - len(live))),
            )
        held = self.lengths[:rows]
        if (held[live] + 1).max(initial=0) > self.capacity:
            raise ValueError(f"a slot passes its capacity of {self.capacity} positions")
        self._tokens[:rows, 0] = np.where(live, tokens, 0)
        self._seqlens[:rows] = held
        self._last[:rows] = 0
        self._total[...] = int(held.max()) + 1
        if self._step_bound != rows:
            self._run(
                0, rows, self._tokens[:rows], self._seqlens[:rows], self._last[:rows], self._logits[:rows], "decode"
            )
            self._step_bound = rows
        else:
            self._session.run_with_iobinding(self._bindings[("decode", 0, rows)][0])
        held += live
        return self._logits[:asked]

    def copy(self, targets: np.ndarray, sources: np.ndarray) -> None:
        """Slot targets[i] takes the positions of slot sources[i]; cycles (swaps) are safe."""
        plan, snapshot_rows = copy_plan([int(t) for t in targets], [int(s) for s in sources])
        if not plan:
            return
        filled = int(self.lengths[np.asarray(sources, np.int64)].max())
        for buffer in self._buffers:
            snapshots = {row: buffer[row, :, :filled].copy() for row in snapshot_rows}
            for target, source, from_snapshot in plan:
                buffer[target, :, :filled] = snapshots[source] if from_snapshot else buffer[source, :, :filled]
        self.lengths[np.asarray(targets, np.int64)] = self.lengths[np.asarray(sources, np.int64)]

    def truncate(self, slot: int, length: int) -> None:
        """Slot `slot` keeps its first `length` positions (a prefix to extend)."""
        self.lengths[slot] = min(int(self.lengths[slot]), length)

    def export_prefix(self, slot: int, length: int) -> list[np.ndarray]:
        """A copy of the first `length` positions of `slot`, every layer and kind: (kv_heads, length, head_size) each."""
        return [buffer[slot, :, :length].copy() for buffer in self._buffers]

    def import_prefix(self, slot: int, prefix: list[np.ndarray]) -> None:
        """Slot `slot` holds `prefix` (from `export_prefix`) and nothing after it."""
        length = prefix[0].shape[1]
        for buffer, part in zip(self._buffers, prefix):
            buffer[slot, :, :length] = part
        self.lengths[slot] = length

    def release(self, slots) -> None:
        """The slots hold nothing; their pages go back to the system."""
        for slot in slots:
            self.lengths[slot] = 0
            begin = -(-slot * self._slot_bytes // _PAGE) * _PAGE  # round in to whole pages
            end = (slot + 1) * self._slot_bytes // _PAGE * _PAGE
            if end > begin and hasattr(mmap, "MADV_DONTNEED"):
                for m in self._maps:
                    m.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def _run(
        self,
        start: int,
        rows: int,
        ids: np.ndarray,
        seqlens: np.ndarray,
        last: np.ndarray,
        logits: np.ndarray,
        purpose: str = "run",
    ) -> None:
        """One session run over slots start..start+rows. `purpose` "decode" keeps a binding of its own, whose
        small inputs stay bound in place between steps (`decode`); every other run rebinds them."""
        entry = self._binding_for(purpose, start, rows)
        binding, graph = entry[0], self._graph
        binding.bind_cpu_input(graph.input_ids, ids)
        binding.bind_cpu_input(graph.seqlens_k, seqlens)
        binding.bind_cpu_input(graph.total_sequence_length, self._total)
        binding.bind_cpu_input(graph.last_index, last)
        if entry[1] != (logits.ctypes.data, logits.shape):
            binding.bind_output(graph.logits, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
            entry[1] = (logits.ctypes.data, logits.shape)
        self._session.run_with_iobinding(binding)

    def _binding_for(self, purpose: str, start: int, rows: int) -> list:
        """The io binding of (purpose, start, rows), its cache views bound; the least recently made of more than
        BINDINGS is dropped."""
        key = (purpose, start, rows)
        entry = self._bindings.get(key)
        if entry is None:
            if len(self._bindings) >= BINDINGS:
                dropped = next(k for k in self._bindings if k[0] != "decode" or k[2] != self._step_bound)
                del self._bindings[dropped]
            binding = self._session.io_binding()
            for name, present, buffer in zip(self._names, self._present, self._buffers):
                view = buffer[start : start + rows]  # contiguous: slots are the outer axis
                binding.bind_input(name, "cpu", 0, np.float32, view.shape, view.ctypes.data)
                binding.bind_output(present, "cpu", 0, np.float32, view.shape, view.ctypes.data)
            entry = self._bindings[key] = [binding, None]
        return entry


def min_rows_of(decoder) -> int:
    """1 if a decode step of one row gives the bits of the same row among two, else 2 (see the module docstring)."""
    probe = SlotCache(decoder, 2, 8)
    ids = np.array([[1, 2, 3], [1, 2, 3]], np.int64) % decoder.vocab_size
    probe.prefill(0, ids, np.array([3, 3]), np.array([2, 2]))
    alone = probe.decode(ids[:1, 0], np.array([True])).copy()
    probe.lengths[0] = 3
    together = probe.decode(ids[:, 0], np.array([True, True]))
    return 1 if np.array_equal(alone[0], together[0]) else 2


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
