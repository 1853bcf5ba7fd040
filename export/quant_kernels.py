"""The per-block search of `blockwise.py`'s "searched" codes, compiled (numba) and run on every core.

For each block of a weight: try each (shrink, shift) starting range, refine its scale by weighted least squares
for the codes it picks, and keep the candidate with the smallest weighted squared error; exactly the arithmetic
of the numpy expression it replaces (float32 throughout, the same divisions and roundings), except that sums are
taken in vector lanes (reassociation) rather than numpy's pairwise order, so a scale can differ from numpy's in
its last bits. The numpy version made `--quantize int4` spend ~80% of its time here: ~1,000 array passes per
weight through memory. Here each block's 32-64 values stay in registers: docs/streaming-export.md has the figures.
This file knows nothing of graphs or layouts.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def search_blocks(blocks, weights, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    """(M, B) float32 blocks and their (M or 1, B) float32 error weights -> (M,) scales, (M,) zero points."""
    m, size = blocks.shape
    scales = np.empty(m, np.float32)
    zeros = np.empty(m, np.float32)
    top32 = np.float32(top)
    tiny = np.float32(1e-8)
    for b in prange(m):
        x = blocks[b]
        w = weights[b % weights.shape[0]]
        lo = x[0]
        hi = x[0]
        for i in range(1, size):
            lo = min(lo, x[i])
            hi = max(hi, x[i])
        best_err = np.float32(np.inf)
        best_scale = np.float32(1.0)
        best_zero = np.float32(0.0)
        for shrink in shrinks:
            for shift in shifts:
                scale = (hi - lo) * shrink / top32
                if not scale > 0:
                    scale = tiny
                zero = min(max(np.rint(-lo / scale + shift), np.float32(0.0)), top32)
                for _ in range(refine_steps):  # weighted least-squares scale for the codes the current scale picks
                    num = np.float32(0.0)
                    den = np.float32(0.0)
                    for i in range(size):
                        q = min(max(np.rint(x[i] / scale) + zero, np.float32(0.0)), top32) - zero
                        num += w[i] * x[i] * q
                        den += w[i] * q * q
                    scale = num / max(den, np.float32(1e-12))
                    if not scale > 0:
                        scale = tiny
                err = np.float32(0.0)
                for i in range(size):
                    q = min(max(np.rint(x[i] / scale) + zero, np.float32(0.0)), top32) - zero
                    d = q * scale - x[i]
                    err += w[i] * d * d
                if err < best_err:
                    best_err, best_scale, best_zero = err, scale, zero
        scales[b] = best_scale
        zeros[b] = best_zero
    return scales, zeros
