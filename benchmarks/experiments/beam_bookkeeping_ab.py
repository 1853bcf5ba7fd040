"""A/B in one process: beam 4x64 on SmolLM2 int8 with session 1's top-k and cache reorder against the current ones.

The old versions are copied here (a full argpartition over beams x vocab; a gather-then-scatter reorder); runs
alternate so that machine noise hits both alike. Needs the suite's int8 folder (run the suite once first).
Usage: .venv/bin/python benchmarks/experiments/beam_bookkeeping_ab.py
"""
import time, numpy as np
import memgpt_runtime as mr
from memgpt_runtime import beam, shared_cache
new_topk, new_select = beam._topk, shared_cache.SharedCache.select
def old_topk(scores, k):
    n = scores.shape[-1]
    part = np.argpartition(-scores, k - 1, axis=-1)[:, :k] if k < n else np.broadcast_to(np.arange(n), scores.shape)
    values = np.take_along_axis(scores, part, axis=-1)
    order = np.lexsort((part, -values), axis=-1)
    return np.take_along_axis(values, order, axis=-1), np.take_along_axis(part, order, axis=-1)
def old_select(self, rows):
    rows = np.asarray(rows, np.int64); old = self.rows; filled = int(self._lengths[:old].max())
    if len(rows) == old:
        moved = np.flatnonzero(rows != np.arange(old))
        if len(moved) == 0: return
        targets, sources = moved, rows[moved]
    else:
        targets, sources = np.arange(len(rows)), rows
    for buffer in self._buffers:
        buffer[targets, :, :filled] = buffer[sources, :, :filled]
    self._lengths[targets] = self._lengths[sources]; self.rows = len(rows)
lm = mr.load("benchmarks/.cache/default/memgpt-int8", threads=2)
ids = lm.encode_prompt("Write a short story about a robot who learns to paint.", chat=True)
run = lambda: lm.generate([ids], num_beams=4, max_new_tokens=64, eos_token_id=[], attention_mask=[1]*len(ids))
times = {"old": [], "new": []}
outs = {}
for i in range(12):
    for name in ("old", "new"):
        beam._topk, shared_cache.SharedCache.select = (old_topk, old_select) if name == "old" else (new_topk, new_select)
        t = time.perf_counter(); outs[name] = run(); times[name].append(time.perf_counter() - t)
assert np.array_equal(outs["old"], outs["new"])
o, n = np.median(times["old"][2:]), np.median(times["new"][2:])
print(f"beam 4x64 int8, median of 10 alternating runs: old {o:.3f} s, new {n:.3f} s, speed-up {o/n:.3f}x")
