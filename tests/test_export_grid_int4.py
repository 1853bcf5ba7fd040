"""Spec: a weight whose blocks of 32 already lie on 4-bit grids (a GGUF Q4_1 file's, dequantized) keeps its scales
and codes; only each block's zero point is rounded, jointly on the block sums' Gram matrix when one is given, and
the mean error can go into a bias (export/grid_int4.py)."""

from __future__ import annotations

import numpy as np
import pytest

from export.blockwise import quantize
from export.grid_int4 import block_sum_gram, find_grids, offset_error, quantize_on_grids, round_zero_points

N, K = 48, 256  # 8 blocks of 32 per row


def _grid_weight(seed: int = 0, integer_zero: bool = False) -> np.ndarray:
    """(N, K) float32 values m + d q per block of 32, d and m fp16 as in Q4_1 (m = -d z, z an integer if asked)."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.005, 0.05, (N, K // 32)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (N, K // 32, 32)).astype(np.float32)
    if integer_zero:
        m = -d * rng.integers(0, 16, (N, K // 32)).astype(np.float32)
    else:
        m = (-d * rng.uniform(0, 15, (N, K // 32))).astype(np.float16).astype(np.float32)
    return (m[..., None] + q * d[..., None]).reshape(N, K)


def _inputs(seed: int = 1) -> np.ndarray:
    """(tokens, K) inputs with a mean, so that a block's constant offset does reach the output."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.2, 1.0, (2048, K)) * np.exp(rng.normal(0, 0.5, K))


def test_a_weight_on_exact_grids_with_integer_zero_points_is_reproduced_exactly():
    w = _grid_weight(integer_zero=True)
    q, bias = quantize_on_grids(w)
    np.testing.assert_array_equal(q.dequantize(), w)
    assert q.block_size == 32 and bias is None


def test_blocks_above_zero_are_the_same_grid_with_raised_codes():
    d = np.float32(0.0078125)  # exact in fp16 and float32
    q = np.random.default_rng(4).integers(2, 16, (N, K))  # codes 2..15: every value above zero, min = 2 d
    w = (q * d).astype(np.float32)
    _, zero, codes, on_grid = find_grids(w.reshape(N, -1, 32))
    assert on_grid.all()
    np.testing.assert_array_equal(codes.reshape(N, K) - zero.repeat(32, axis=1), q)  # (q - z) d = w
    np.testing.assert_array_equal(quantize_on_grids(w)[0].dequantize(), w)


def test_the_only_error_of_a_grid_block_is_its_rounded_zero_point():
    w = _grid_weight()
    q, _ = quantize_on_grids(w)
    error = (q.dequantize() - w).reshape(N, -1, 32)  # (N, blocks, 32)
    np.testing.assert_allclose(error, np.repeat(error[..., :1], 32, axis=-1), atol=1e-6)  # constant per block
    steps = q.scales[..., None]
    assert (np.abs(error) <= 0.5 * steps + 1e-6).all()  # at most half a step


def test_blocks_off_every_grid_get_the_searched_codes():
    w = np.random.default_rng(2).normal(size=(N, K)).astype(np.float32)
    importance = np.exp(np.random.default_rng(3).normal(0, 1, K))
    got, _ = quantize_on_grids(w, importance)
    np.testing.assert_array_equal(got.dequantize(), quantize(w, 4, 32, "searched", importance).dequantize())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_joint_rounding_never_increases_the_calibration_error_of_independent_rounding(seed):
    w, x = _grid_weight(seed), _inputs(seed + 10)
    sums_gram = block_sum_gram(x.T @ x / len(x))
    d, z, _, on_grid = find_grids(w.reshape(N, -1, 32))
    independent = round_zero_points(d, z, on_grid)
    joint = round_zero_points(d, z, on_grid, sums_gram)
    before, after = offset_error(d, z, independent, on_grid, sums_gram), offset_error(d, z, joint, on_grid, sums_gram)
    assert (after <= before + 1e-12).all()
    assert after.sum() < 0.8 * before.sum()  # and cuts it: measured 0.63-0.73 of it on these inputs
    assert ((joint == np.floor(z)) | (joint == np.ceil(z))).all()  # floor or ceil, never further


def test_joint_rounding_cuts_the_error_of_the_product_on_the_calibration_inputs():
    w, x = _grid_weight(), _inputs()
    independent, _ = quantize_on_grids(w)
    joint, _ = quantize_on_grids(w, sums_gram=block_sum_gram(x.T @ x / len(x)))
    error = [float(((x @ (q.dequantize() - w).T) ** 2).mean()) for q in (independent, joint)]
    assert error[1] < 0.8 * error[0]  # measured 0.72


def test_the_bias_removes_the_mean_error_of_the_product():
    w, x = _grid_weight(), _inputs()
    q, bias = quantize_on_grids(w, mean=x.mean(axis=0))
    error = x @ (q.dequantize() - w).T.astype(np.float64) + bias  # (tokens, N)
    np.testing.assert_allclose(error.mean(axis=0), 0.0, atol=1e-5)


def test_k_must_be_whole_blocks_of_32():
    with pytest.raises(ValueError, match="K must be a whole number of blocks of 32, got K=40"):
        quantize_on_grids(np.zeros((4, 40), np.float32))
