"""The inner loops of 4-bit rounding, compiled (numba) and run on every core: the per-block code search of
`blockwise.py` and the channel-by-channel rounding of `gptq.py`.

Both follow the arithmetic of the numpy expressions they replace (float32 throughout, the same divisions and
roundings, the same order of candidates and channels), except that sums are taken in vector lanes
(reassociation) rather than numpy's pairwise order, so a scale can differ from numpy's in its last bits. The
numpy versions made `--quantize int4` spend most of its time in these loops, ~1,000 passes over each weight
through memory; here each block's 32-64 values stay in registers and rows run in parallel. Figures:
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
    least-squares scales for the codes the current scale picks, then its error (blockwise.search_scale_zero)."""
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
        for shift in shifts:
            scale = (hi - lo) * shrink / top32
            if not scale > 0:
                scale = tiny
            zero = min(max(np.rint(-lo / scale + shift), np.float32(0.0)), top32)
            for _ in range(refine_steps):
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
def gptq_search(columns, lo, block, weights, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    """The (scale, zero) of every row's block of channels lo:lo+block, searched on the rows as they are now:
    `columns` (K, N) float32 is channel-major (gptq.py's copy), `weights` the block's error weights."""
    n = columns.shape[1]
    scales = np.empty(n, np.float32)
    zeros = np.empty(n, np.float32)
    for chunk in prange((n + ROWS - 1) // ROWS):  # one parallel region: each thread takes whole chunks of rows
        x = np.empty(block, np.float32)
        for r in range(chunk * ROWS, min(n, (chunk + 1) * ROWS)):
            for j in range(block):
                x[j] = columns[lo + j, r]
            scales[r], zeros[r] = search_block(x, weights, shrinks, shifts, refine_steps, top)
    return scales, zeros


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def gptq_round(columns, lo, block, spread, scales, zeros, top):  # pragma: no cover - compiled
    """Channel by channel through lo:lo+block of `columns` (K, N), updated in place: every row's code and error,
    the error spread to the block's later channels. Returns (codes, errors), each (block, N); the caller spreads
    the errors to the later channels (matrix products). Rows are the inner loop: contiguous vectors."""
    n = columns.shape[1]
    top32 = np.float32(top)
    codes = np.empty((block, n), np.float32)
    errors = np.empty((block, n), np.float32)
    for chunk in prange((n + ROWS - 1) // ROWS):
        first, last = chunk * ROWS, min(n, (chunk + 1) * ROWS)
        for j in range(block):
            c = lo + j
            diagonal = spread[c, c]
            channel, code_row, error_row = columns[c], codes[j], errors[j]  # (N,) rows: loops over r vectorize
            for r in range(first, last):
                code = min(max(np.rint(channel[r] / scales[r]) + zeros[r], np.float32(0.0)), top32)
                code_row[r] = code
                error_row[r] = (channel[r] - (code - zeros[r]) * scales[r]) / diagonal
            for t in range(j + 1, block):
                factor = spread[c, lo + t]
                later = columns[lo + t]
                for r in range(first, last):
                    later[r] -= error_row[r] * factor
    return codes, errors


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
