"""4-bit MatMulNBits codes for weights that already lie on 4-bit grids, as a GGUF Q4_1 file's dequantized blocks do.

A block of 32 values on a grid is m + d * q with integer codes q in 0..15 (Q4_1: d and m per block of 32 along K).
MatMulNBits writes (q - z) * d with an integer zero point z, so such a block keeps its scale d and its codes q
exactly, and its only error is z = -m / d rounded to an integer: the same offset d * (z - round(z)) on every weight
of the block, which reaches output n as sum_b e_{b,n} * S_b (S_b the sum of the block's 32 inputs). Three ways to
cut it, each optional: the rounding of every zero point of a row chosen jointly (floor or ceil, GPTQ over the
row's blocks on the Gram matrix of the block sums, kept only where it beats independent rounding); the remaining
mean error moved into a bias, -(W' - W) E[x]. Blocks not on a grid get the importance-weighted search of
`blockwise.py` in blocks of 32. Measurements and the alternatives: docs/int4-quality.md. No graphs here.
"""

from __future__ import annotations

import numpy as np

from .blockwise import Blockwise, _block_weights, _blocks, block_codes, pack, search_scale_zero

GRID_BLOCK = 32  # Q4_1's and Q4_0's block along K
TOP = 15  # 4-bit codes
TOLERANCE = 1e-3  # of a step: how far a value may sit from its grid point (float32 dequantization is exact here)
DAMPING = 0.01  # of the Gram matrix's mean diagonal, added to its diagonal before the joint rounding


def find_grids(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per block of (N, k_blocks, 32) values: (scale d, zero point z = -m/d as a float, codes q, on_grid).

    A block is on a grid when its values are min + d * q for integers q in 0..15, d = (max - min) / span for a span
    in 15..1 (the largest that fits), and its zero point rounds into 0..15; the other entries of off-grid blocks
    are undefined.
    """
    x = blocks.astype(np.float64).reshape(-1, blocks.shape[-1])  # (blocks, 32)
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    scale = np.zeros_like(lo)
    codes = np.zeros(x.shape, np.float64)
    found = np.zeros(lo.shape, bool)
    for span in range(TOP, 0, -1):
        left = np.flatnonzero(~found & (hi > lo))  # a constant block is left to the search
        if not len(left):
            break
        d = (hi[left] - lo[left]) / span
        q = np.rint((x[left] - lo[left, None]) / d[:, None])
        fits = np.abs(x[left] - lo[left, None] - q * d[:, None]).max(axis=-1) <= TOLERANCE * d
        found[left[fits]], scale[left[fits]], codes[left[fits]] = True, d[fits], q[fits]
    zero = -lo / np.where(scale > 0, scale, 1.0)
    # subtle: a block above zero (z < 0) is the same grid with every code and z raised by t, while codes fit in 4 bits
    raise_by = np.maximum(0.0, np.ceil(-zero - 0.5))
    codes, zero = codes + raise_by[..., None], zero + raise_by
    on_grid = found & (codes.max(axis=-1) <= TOP) & (zero >= -0.5) & (zero <= TOP + 0.5)
    shape = blocks.shape[:-1]
    return scale.reshape(shape), zero.reshape(shape), codes.reshape(blocks.shape), on_grid.reshape(shape)


def round_zero_points(
    scale: np.ndarray, zero: np.ndarray, on_grid: np.ndarray, gram: np.ndarray | None = None
) -> np.ndarray:
    """(N, k_blocks) integer zero points (as float) for on-grid blocks: each z rounded to the nearest integer, or,
    with `gram` (k_blocks, k_blocks) = E[S S^T] of the block sums, floor or ceil chosen per row by GPTQ over the
    row's blocks (Frantar et al. 2022, on the offsets m = -d z in weight units, the Hessian shared by every row),
    each row keeping whichever of the two roundings leaves the smaller calibration error e^T gram e."""
    nearest = np.clip(np.rint(zero), 0, TOP)
    if gram is None:
        return nearest
    low, high = np.clip(np.floor(zero), 0, TOP), np.clip(np.ceil(zero), 0, TOP)
    h = gram + DAMPING * np.mean(np.diag(gram)) * np.eye(len(gram))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # GPTQ's Cholesky factor of the inverse Hessian
    safe = np.where(on_grid, scale, 1.0)
    target = -scale * zero  # (N, k_blocks) offsets, updated as earlier blocks' errors are spread forward
    joint = nearest.copy()
    for b in range(zero.shape[1]):
        chosen = np.clip(np.rint(-target[:, b] / safe[:, b]), low[:, b], high[:, b])
        joint[:, b] = np.where(on_grid[:, b], chosen, nearest[:, b])
        error = np.where(on_grid[:, b], (target[:, b] + scale[:, b] * chosen) / upper[b, b], 0.0)
        target[:, b + 1 :] -= error[:, None] * upper[b, b + 1 :]
    better = offset_error(scale, zero, joint, on_grid, gram) < offset_error(scale, zero, nearest, on_grid, gram)
    return np.where(better[:, None], joint, nearest)


def offset_error(
    scale: np.ndarray, zero: np.ndarray, rounded: np.ndarray, on_grid: np.ndarray, gram: np.ndarray
) -> np.ndarray:
    """(N,) e^T gram e per row, e = d (z - round(z)) the offsets the rounded zero points leave on on-grid blocks."""
    e = np.where(on_grid, scale * (zero - rounded), 0.0)  # (N, k_blocks)
    return np.einsum("nb,bc,nc->n", e, gram, e)


def block_sum_gram(gram: np.ndarray, block: int = GRID_BLOCK) -> np.ndarray:
    """(K / block, K / block) E[S S^T] of the block sums, from the (K, K) Gram matrix E[x x^T] of the input."""
    k = gram.shape[0]
    return gram.reshape(k // block, block, k // block, block).sum(axis=(1, 3))


def quantize_on_grids(
    w: np.ndarray,
    importance: np.ndarray | None = None,
    sums_gram: np.ndarray | None = None,
    mean: np.ndarray | None = None,
    grids: bool = True,
) -> tuple[Blockwise, np.ndarray | None]:
    """4-bit codes in blocks of 32 of a (N, K) weight, and a bias (N,) when `mean` (K,) = E[x] is given.

    `grids`: on-grid blocks keep their scales and codes (else every block is searched, weighed by `importance`
    (K,)); `sums_gram` (K/32, K/32) = E[S S^T] of the input's block sums (block_sum_gram): their zero points
    rounded jointly (round_zero_points); `mean`: the bias
    -(W' - W) E[x] that takes the rounding's mean error out of the output.
    """
    w = np.asarray(w, np.float32)
    k = w.shape[1]
    if k % GRID_BLOCK:
        raise ValueError(f"K must be a whole number of blocks of {GRID_BLOCK}, got K={k}")
    blocks = _blocks(w, GRID_BLOCK)  # (N, k_blocks, 32)
    weights = np.broadcast_to(_block_weights(importance, k, GRID_BLOCK), blocks.shape)
    if not grids:
        scale, zero = search_scale_zero(blocks, TOP, weights)
        return _finish(w, scale, zero, block_codes(blocks, scale, zero, TOP), mean)
    scale, z, codes, on_grid = find_grids(blocks)
    zero = round_zero_points(scale, z, on_grid, sums_gram)
    off = ~on_grid
    if off.any():  # only the blocks off every grid are searched
        found = search_scale_zero(blocks[off][None], TOP, np.ascontiguousarray(weights[off])[None])
        scale[off], zero[off] = found[0][0], found[1][0]
        codes[off] = block_codes(blocks[off][None], found[0], found[1], TOP)[0]
    return _finish(w, scale, zero, codes, mean)


def _finish(
    w: np.ndarray, scale: np.ndarray, zero: np.ndarray, codes: np.ndarray, mean: np.ndarray | None
) -> tuple[Blockwise, np.ndarray | None]:
    q = pack(codes.astype(np.float32), scale.astype(np.float32), zero.astype(np.float32), 4, GRID_BLOCK, w.shape[1])
    if mean is None:
        return q, None
    bias = -((q.dequantize().astype(np.float64) - w) @ np.asarray(mean, np.float64))  # (N,)
    return q, bias.astype(np.float32)
