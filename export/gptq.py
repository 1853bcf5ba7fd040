"""GPTQ: round a weight to blockwise 4-bit codes one input channel at a time, spreading each error onto the rest.

Rounding every weight to its nearest code (`blockwise.py`) makes each error independently; GPTQ (Frantar et al.,
2022) quantizes the input channels of a (N, K) weight in order and, after each one, adjusts the channels not yet
quantized so that the layer's output on the calibration activations X moves as little as possible. All it needs
from the calibration is the (K, K) Gram matrix H = X^T X / positions (`calibrate.py`). Each block of
`block_size` channels gets its scale and zero point when GPTQ reaches it, from the weights as they are then
(the importance-weighted search of `blockwise.py`, with diag(H) as the importance), so the result packs into the
same MatMulNBits layout as any other blockwise weight. The quantizer uses it for the LM head only: on every
layer it made SmolLM2's perplexity worse (docs/quantization.md). Pure numpy; this file knows nothing of graphs.
"""

from __future__ import annotations

import numpy as np

from .blockwise import Blockwise, block_codes, pack, search_scale_zero

# fraction of H's mean diagonal added to its diagonal; the reference's 0.01 fits a few thousand calibration
# positions too closely (docs/quantization.md)
DAMPING = 0.3


def gptq(w: np.ndarray, gram: np.ndarray, bits: int, block_size: int,
         factors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Blockwise:
    """Quantize a (N, K) weight (K a multiple of `block_size`) given the (K, K) Gram matrix of its inputs.

    Rows are independent given the matrix, so a large weight can be quantized in row chunks that share
    `factors = gptq_factors(gram)`, computed once.
    """
    n, k = w.shape
    if k % block_size:
        raise ValueError(f"GPTQ needs whole blocks: K={k} is not a multiple of the block size {block_size}")
    spread, importance, dead = factors if factors is not None else gptq_factors(gram)
    top = 2**bits - 1
    weight = np.array(w, np.float32)  # (N, K), updated in place as channels are quantized
    weight[:, dead] = 0.0

    k_blocks = k // block_size
    codes = np.empty((n, k_blocks, block_size), np.float32)
    scales = np.empty((n, k_blocks), np.float32)
    zeros = np.empty((n, k_blocks), np.float32)
    for b in range(k_blocks):
        lo, hi = b * block_size, (b + 1) * block_size
        block = weight[:, lo:hi]  # (N, block): a view, updated channel by channel below
        weights = importance[None, None, lo:hi] / max(float(importance[lo:hi].mean()), 1e-12)
        scale, zero = search_scale_zero(block[:, None, :].copy(), top, weights)  # (N, 1) each, from the weights as they are now
        scales[:, b], zeros[:, b] = scale[:, 0], zero[:, 0]
        errors = np.empty((n, block_size), np.float32)
        for j in range(block_size):
            column = block[:, j]
            code = block_codes(column[:, None, None], scale, zero, top)[:, 0, 0]
            codes[:, b, j] = code
            error = (column - (code - zero[:, 0]) * scale[:, 0]) / spread[lo + j, lo + j]
            block[:, j + 1 :] -= np.outer(error, spread[lo + j, lo + j + 1 : hi])
            errors[:, j] = error
        weight[:, hi:] -= errors @ spread[lo:hi, hi:]  # the block's errors onto every later channel at once
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
    spread = np.linalg.cholesky(np.linalg.inv(h)).T.astype(np.float32)  # (K, K)
    return spread, np.diag(h).astype(np.float32), dead
