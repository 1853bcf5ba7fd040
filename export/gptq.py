"""GPTQ: round a weight to blockwise 4-bit codes one input channel at a time, spreading each error onto the rest.

Rounding every weight to its nearest code (`blockwise.py`) makes each error independently; GPTQ (Frantar et al.,
2022) quantizes the input channels of a (N, K) weight in order and, after each one, adjusts the channels not yet
quantized so that the layer's output on the calibration activations X moves as little as possible. All it needs
from the calibration is the (K, K) Gram matrix H = X^T X / positions (`calibrate.py`). Each block of
`block_size` channels gets its scale and zero point when GPTQ reaches it, from the weights as they are then
(the importance-weighted search of `blockwise.py`, with diag(H) as the importance), so the result packs into the
same MatMulNBits layout as any other blockwise weight. The quantizer uses it for the LM head only: on every
layer it made SmolLM2's perplexity worse (docs/quantization.md). The channel loop runs compiled
(quant_kernels.gptq_group); this file knows nothing of graphs.
"""

from __future__ import annotations

import numpy as np

from .blockwise import REFINE_STEPS, SHIFTS, SHRINKS, Blockwise, pack
from .quant_kernels import gptq_group

# fraction of H's mean diagonal added to its diagonal; the reference's 0.01 fits a few thousand calibration
# positions too closely (docs/quantization.md)
DAMPING = 0.3
GROUP = 256  # channels whose errors are applied to the later channels in one matrix product


def gptq(
    w: np.ndarray,
    gram: np.ndarray,
    bits: int,
    block_size: int,
    factors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Blockwise:
    """Quantize a (N, K) weight (K a multiple of `block_size`) given the (K, K) Gram matrix of its inputs.

    Rows are independent given the matrix, so a large weight can be quantized in row chunks that share
    `factors = gptq_factors(gram)`, computed once.
    """
    n, k = w.shape
    if k % block_size:
        raise ValueError(f"GPTQ needs whole blocks: K={k} is not a multiple of the block size {block_size}")
    spread, importance, dead = factors if factors is not None else gptq_factors(gram)
    # (K, N) channel-major, updated in place as channels are quantized; subtle: np.array(w.T) would keep w's
    # memory order, and every loop over rows would stride by K
    columns = np.ascontiguousarray(w.T, np.float32)
    columns[dead, :] = 0.0
    blocks = importance.reshape(-1, block_size)
    # each block's error weights: its importance over its mean (as blockwise weighs the searched codes)
    weights = np.stack([row / max(float(row.mean()), 1e-12) for row in blocks]).astype(np.float32)
    codes = np.empty((n, k // block_size, block_size), np.uint8)
    scales = np.empty((n, k // block_size), np.float32)
    zeros = np.empty((n, k // block_size), np.float32)
    search = (np.array(SHRINKS, np.float32), np.array(SHIFTS, np.float32), REFINE_STEPS, 2**bits - 1)
    for start in range(0, k, GROUP):  # lazy batches (the GPTQ paper's): later channels are updated once per group
        end = min(k, start + GROUP)
        errors = gptq_group(columns, spread, weights, start, end, block_size, *search, codes, scales, zeros)
        if end < k:  # the group's errors onto every later channel at once (the product on every core)
            columns[end:] -= spread[start:end, end:].T @ errors
    return pack(codes, scales, zeros, bits, block_size, k)


def gptq_factors(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spread (K, K), importance (K,), dead (K,) bool) of a Gram matrix: what every row of GPTQ reads."""
    k = gram.shape[0]
    if gram.shape != (k, k) or not np.isfinite(gram).all():
        raise ValueError(f"the Gram matrix must be a finite ({k}, {k}) array, got {gram.shape}")
    h = np.array(gram, np.float64)
    dead = np.diag(h) <= 0  # channels the calibration never drove: their weights cannot matter to it
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += DAMPING * np.mean(np.diag(h))
    # upper Cholesky factor U of H^-1 (H^-1 = U^T U): row j holds how channel j's error spreads to later ones
    spread = np.ascontiguousarray(np.linalg.cholesky(np.linalg.inv(h)).T, np.float32)  # (K, K)
    return spread, np.diag(h).astype(np.float32), dead
