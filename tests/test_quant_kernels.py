"""Spec: the compiled 4-bit code search (export/quant_kernels.py) skips work without changing its answer: the
(scale, zero) of every block is bit for bit the one the full search (every candidate, every refinement step)
picks, for the layers' blocks of 64 and the GPTQ head's blocks of 32, weighted or not."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from export.blockwise import REFINE_STEPS, SHIFTS, SHRINKS
from export.quant_kernels import FASTMATH, search_blocks


@njit(fastmath=FASTMATH)
def _full_search_block(x, w, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    """The search as it ran before its shortcuts: all candidates, all refinement steps."""
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


@njit(parallel=True, fastmath=FASTMATH)
def _full_search_blocks(blocks, weights, shrinks, shifts, refine_steps, top):  # pragma: no cover - compiled
    m = blocks.shape[0]
    scales = np.empty(m, np.float32)
    zeros = np.empty(m, np.float32)
    for b in prange(m):
        scales[b], zeros[b] = _full_search_block(
            blocks[b], weights[b % weights.shape[0]], shrinks, shifts, refine_steps, top
        )
    return scales, zeros


@pytest.mark.parametrize("block", [64, 32])
@pytest.mark.parametrize("weighted", [True, False])
def test_the_search_picks_what_every_candidate_and_step_would(block, weighted):
    rng = np.random.default_rng(block)
    w = (rng.standard_normal((512, 4 * block)) * 0.02).astype(np.float32)
    w[0, :block] = 0.0  # a constant block: every candidate starts alike
    w[1, :block] = 0.01
    w[2, : block // 2] *= 50  # an outlier half
    importance = rng.gamma(0.5, 2.0, 4 * block) if weighted else np.ones(4 * block)
    importance = (importance / importance.mean() + 1e-6).astype(np.float32)
    blocks, weights = w.reshape(-1, block).copy(), importance.reshape(-1, block).copy()
    args = (np.array(SHRINKS, np.float32), np.array(SHIFTS, np.float32), REFINE_STEPS, 15)
    scales, zeros = search_blocks(blocks, weights, *args)
    full_scales, full_zeros = _full_search_blocks(blocks, weights, *args)
    np.testing.assert_array_equal(scales, full_scales)
    np.testing.assert_array_equal(zeros, full_zeros)
