"""The inner loops of 4-bit rounding, compiled (numba) and run on every core: the per-block code search of
`blockwise.py` and the channel-by-channel rounding of `gptq.py`.

Both follow the arithmetic of the numpy expressions they replace (float32 throughout, the same divisions and
roundings, the same order of candidates and channels), except that sums are taken in vector lanes
(reassociation) rather than numpy's pairwise order, so a scale can differ from numpy's in its last bits. The
numpy versions made `--quantize int4` spend most of its time in these loops, ~1,000 passes over each weight
through memory; here each block's 32-64 values stay in registers and rows run in parallel, each task taking its
rows through the whole weight (small parallel regions, one per block, spent their time waiting on each other on
this loaded 2-core machine). Figures:
docs/streaming-export.md. This file knows nothing of graphs or layouts.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FASTMATH = {"reassoc", "contract"}  # vectorized sums and fused multiply-adds; no change to NaN/inf handling


@njit(cache=True, fastmath=FASTMATH)
def search_block(x, w, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    """(scale, zero) of the (shrink, shift) candidate with the smallest w-weighted squared error for one block x.

    Each candidate: scale from the shrunk range, zero point from the shifted minimum, `refine_steps` weighted
    least-squares scales for the codes the current scale picks, then its error (blockwise.search_scale_zero).
    Two shortcuts return exactly what the full loop would: a candidate that starts from the (scale, zero) of the
    one before it is skipped (it would end with the same error, and only a smaller one replaces the best), and
    refinement stops once a step gives back the scale it started from (every later step would too)."""
    size = x.shape[0]
    top32 = np.float32(top)
    tiny = np.float32(1e-8)
    lo = x[0]
    hi = x[0]
    for i in range(1, size):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
    best_err = np.float32(np.inf)
    best_scale = np.float32(1.0)
    best_zero = np.float32(0.0)
    for shrink in shrinks:
        last_zero = np.float32(-1.0)  # no zero point yet for this shrink
        for shift in shifts:
            scale = (hi - lo) * shrink / top32
            if not scale > 0:
                scale = tiny
            zero = min(max(np.rint(-lo / scale + shift), np.float32(0.0)), top32)
            # subtle: the same start as the previous shift's (its scale is this shrink's too); with SHIFTS in
            # increasing order the zero points never decrease, so this catches every repeat (4-8 of 20 remain)
            if zero == last_zero:
                continue
            last_zero = zero
            for _ in range(refine_steps):
                num = np.float32(0.0)
                den = np.float32(0.0)
                for i in range(size):
                    q = min(max(np.rint(x[i] / scale) + zero, np.float32(0.0)), top32) - zero
                    num += w[i] * x[i] * q
                    den += w[i] * q * q
                refined = num / max(den, np.float32(1e-12))
                if not refined > 0:
                    refined = tiny
                if refined == scale:  # the same codes again: the remaining steps would change nothing
                    break
                scale = refined
            err = np.float32(0.0)
            for i in range(size):
                q = min(max(np.rint(x[i] / scale) + zero, np.float32(0.0)), top32) - zero
                d = q * scale - x[i]
                err += w[i] * d * d
            if err < best_err:
                best_err, best_scale, best_zero = err, scale, zero
    return best_scale, best_zero


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def search_blocks(blocks, weights, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    """(M, B) float32 blocks and their (M or fewer, B) float32 error weights (block b reads row b % rows) ->
    (M,) scales, (M,) zero points."""
    m = blocks.shape[0]
    scales = np.empty(m, np.float32)
    zeros = np.empty(m, np.float32)
    for b in prange(m):
        scales[b], zeros[b] = search_block(blocks[b], weights[b % weights.shape[0]], shrinks, shifts, refine_steps, top)
    return scales, zeros


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def gptq_group(
    columns, spread, block_weights, start, end, block, shrinks, shifts, refine_steps, top, codes, scales, zeros
):  # pragma: no cover - compiled
    """GPTQ through the group of channels start:end of `columns` (K, N) float32, channel-major and updated in place
    (gptq.py's copy): per block of channels, each row's (scale, zero) searched on the row as it is then (weighed by
    `block_weights` (K / block, block)), its channels rounded in order, each error spread to the block's later
    channels and the block's errors to the rest of the group. Writes the group's codes (N, K / block, block),
    scales and zero points (N, K / block); returns its errors (end - start, N), which the caller spreads to the
    later channels (one matrix product). Rows are independent: each task takes a chunk of ROWS rows through the
    whole group, one parallel region per group."""
    n = columns.shape[1]
    top32 = np.float32(top)
    errors = np.empty((end - start, n), np.float32)
    for chunk in prange((n + ROWS - 1) // ROWS):
        first, last = chunk * ROWS, min(n, (chunk + 1) * ROWS)
        rows = last - first
        x = np.empty(block, np.float32)
        scale = np.empty(rows, np.float32)
        zero = np.empty(rows, np.float32)
        block_codes = np.empty((rows, block), np.uint8)
        total = np.empty(rows, np.float32)
        for lo in range(start, end, block):
            hi, b = lo + block, lo // block
            for r in range(rows):
                for j in range(block):
                    x[j] = columns[lo + j, first + r]
                scale[r], zero[r] = search_block(x, block_weights[b], shrinks, shifts, refine_steps, top)
            for j in range(block):
                c = lo + j
                diagonal = spread[c, c]
                channel, error = columns[c, first:last], errors[c - start, first:last]  # (rows,): loops vectorize
                for r in range(rows):
                    code = min(max(np.rint(channel[r] / scale[r]) + zero[r], np.float32(0.0)), top32)
                    block_codes[r, j] = np.uint8(code)
                    error[r] = (channel[r] - (code - zero[r]) * scale[r]) / diagonal
                for t in range(j + 1, block):
                    factor = spread[c, lo + t]
                    later = columns[lo + t, first:last]
                    for r in range(rows):
                        later[r] -= error[r] * factor
            for r in range(rows):
                codes[first + r, b] = block_codes[r]
                scales[first + r, b] = scale[r]
                zeros[first + r, b] = zero[r]
            # the block's errors onto the rest of the group: columns[hi:end] -= spread[lo:hi, hi:end].T @ errors
            for c in range(hi, end):
                for r in range(rows):
                    total[r] = np.float32(0.0)
                for j in range(block):
                    factor = spread[lo + j, c]
                    error = errors[lo - start + j, first:last]
                    for r in range(rows):
                        total[r] += factor * error[r]
                later = columns[c, first:last]
                for r in range(rows):
                    later[r] -= total[r]
    return errors


ROWS = 256  # rows per task of the GPTQ kernels: a chunk's block of channels stays in the CPU caches


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def rtn_blocks(blocks, top):  # pragma: no cover - compiled
    """Round-to-nearest codes of (M, B) float32 blocks: each block's min and max (with 0) map to the end codes.
    Returns (codes (M, B) uint8, scales (M,), zero points (M,)), bit for bit the numpy arithmetic it replaced."""
    m, size = blocks.shape
    top32 = np.float32(top)
    codes = np.empty((m, size), np.uint8)
    scales = np.empty(m, np.float32)
    zeros = np.empty(m, np.float32)
    for b in prange(m):
        x = blocks[b]
        lo = np.float32(0.0)
        hi = np.float32(0.0)
        for i in range(size):
            lo = min(lo, x[i])
            hi = max(hi, x[i])
        scale = (hi - lo) / top32
        if not scale > 0:
            scale = np.float32(1e-8)
        zero = min(max(np.rint(-lo / scale), np.float32(0.0)), top32)
        scales[b] = scale
        zeros[b] = zero
        for i in range(size):
            codes[b, i] = np.uint8(min(max(np.rint(x[i] / scale) + zero, np.float32(0.0)), top32))
    return codes, scales, zeros
