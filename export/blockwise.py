"""Blockwise weight quantization into onnxruntime's MatMulNBits layout, in numpy (the search compiled).

A weight W of shape (N, K) (output features, input features) is cut into blocks of `block_size` along K;
each block gets a float scale and an integer zero point, and W ~= (code - zero_point) * scale. Integer zero
points keep MatMulNBits on its fast int8 kernels (accuracy_level 4); float zero points run far slower
(docs/quantization.md). Two ways to pick the codes:
`rtn` (the block's min and max map to the end codes) and `searched` (a few candidate ranges per block, each
refined by least squares, keeping the one with the smallest squared error; in the spirit of llama.cpp's
`make_qkx` quantizers). `searched` can weigh each input channel's error by an `importance` (K,), the mean
square of the activation it multiplies (calibrate.py), as llama.cpp's imatrix quantizers do: the error that
counts is the one in W^T x, not in W. Layout per the MatMulNBits spec: B is (N, k_blocks, block_size * bits / 8),
codes packed low nibble first along K; 4-bit zero points two blocks per byte, 8-bit ones a byte each.
This file does not touch graphs (`quantize.py` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHRINKS = (1.0, 0.95, 0.9, 0.85)  # fractions of the block's range tried as the code range
SHIFTS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # zero-point offsets tried, in codes
REFINE_STEPS = 4


@dataclass(frozen=True)
class Blockwise:
    """MatMulNBits inputs for one weight: packed codes, scales and packed zero points."""

    bits: int
    block_size: int
    n: int
    k: int
    packed: np.ndarray  # (N, k_blocks, block_size * bits // 8) uint8
    scales: np.ndarray  # (N, k_blocks) float32
    zero_points: np.ndarray  # (N, ceil(k_blocks * bits / 8)) uint8

    def dequantize(self) -> np.ndarray:
        """(N, K) float32: the weight the kernel multiplies by."""
        codes = unpack_codes(self.packed, self.bits)  # (N, k_blocks, block)
        zero = unpack_zero_points(self.zero_points, self.bits, self.scales.shape[1])  # (N, k_blocks)
        w = (codes.astype(np.float32) - zero[:, :, None]) * self.scales[:, :, None]
        return w.reshape(self.n, -1)[:, : self.k]


def quantize(
    w: np.ndarray, bits: int, block_size: int = 32, method: str = "rtn", importance: np.ndarray | None = None
) -> Blockwise:
    """Quantize a (N, K) weight with `method` "rtn" or "searched"; `importance` (K,) >= 0 weighs "searched"."""
    if method not in ("rtn", "searched"):
        raise ValueError(f"method must be 'rtn' or 'searched', got {method!r}")
    blocks = _blocks(np.asarray(w, np.float32), block_size)  # (N, k_blocks, block)
    if method == "rtn":  # compiled (quant_kernels.rtn_blocks): min and max (with 0) map to the end codes
        from .quant_kernels import rtn_blocks

        n, k_blocks, _ = blocks.shape
        codes, scale, zero = rtn_blocks(np.ascontiguousarray(blocks).reshape(-1, block_size), 2**bits - 1)
        return pack(
            codes.reshape(blocks.shape),
            scale.reshape(n, k_blocks),
            zero.reshape(n, k_blocks),
            bits,
            block_size,
            w.shape[1],
        )
    else:
        scale, zero = search_scale_zero(blocks, 2**bits - 1, _block_weights(importance, w.shape[1], block_size))
    codes = block_codes(blocks, scale, zero, 2**bits - 1)
    return pack(codes, scale, zero, bits, block_size, w.shape[1])


def _block_weights(importance: np.ndarray | None, k: int, block_size: int) -> np.ndarray:
    """(1, k_blocks, block) positive weights for the squared errors: `importance` over its mean, or all ones."""
    if importance is None:
        return np.ones((1, -(-k // block_size), block_size), np.float32)
    importance = np.asarray(importance, np.float64)
    if importance.shape != (k,) or not np.isfinite(importance).all() or (importance < 0).any():
        raise ValueError(f"importance must be {k} finite values >= 0 (one per input channel), got {importance.shape}")
    mean = importance.mean()
    scaled = importance / mean if mean > 0 else np.ones(k)
    # subtle: a floor keeps every weight fitted (a channel the calibration never drove still gets a code)
    weights = (scaled + 1e-6).astype(np.float32)[None, :]  # (1, K)
    return _blocks(weights, block_size)  # padding channels weigh 0: their codes do not matter


def search_scale_zero(blocks: np.ndarray, top: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the (scale, zero) of the candidates below with the smallest `weights`-weighted squared error.

    blocks (N, k_blocks, block), weights (1 or N, k_blocks, block); compiled in `quant_kernels.py`, which says how
    its arithmetic relates to the numpy expression (each candidate: scale from the shrunk range, zero point from
    the shifted minimum, REFINE_STEPS weighted least-squares scales for the codes it picks, then its error).
    """
    from .quant_kernels import search_blocks

    n, k_blocks, size = blocks.shape
    flat = np.ascontiguousarray(blocks, np.float32).reshape(-1, size)  # (N * k_blocks, block)
    w = np.ascontiguousarray(np.broadcast_to(weights, (weights.shape[0], k_blocks, size)), np.float32).reshape(-1, size)
    scales, zeros = search_blocks(
        flat, w, np.array(SHRINKS, np.float32), np.array(SHIFTS, np.float32), REFINE_STEPS, top
    )
    return scales.reshape(n, k_blocks), zeros.reshape(n, k_blocks)


def block_codes(blocks: np.ndarray, scale: np.ndarray, zero: np.ndarray, top: int) -> np.ndarray:
    """The codes (0..top, as float32) of blocks (N, k_blocks, block) on each block's (scale, zero) grid."""
    return np.clip(np.round(blocks / scale[:, :, None]) + zero[:, :, None], 0, top).astype(np.float32)


def _nonzero(scale: np.ndarray) -> np.ndarray:
    return np.where(scale > 0, scale, 1e-8).astype(np.float32)  # a constant-zero block: any scale works


def pack(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, block_size: int, k: int) -> Blockwise:
    """Pack (N, k_blocks, block) codes and (N, k_blocks) zero points into MatMulNBits' byte layout."""
    n, k_blocks, _ = codes.shape
    codes, zero = codes.astype(np.uint8), zero.astype(np.uint8)
    if bits == 8:
        packed, zp = codes, zero
    elif bits == 4:
        packed = codes[:, :, 0::2] | (codes[:, :, 1::2] << 4)
        if k_blocks % 2:
            zero = np.concatenate([zero, np.zeros((n, 1), np.uint8)], axis=1)
        zp = zero[:, 0::2] | (zero[:, 1::2] << 4)
    else:
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    return Blockwise(
        bits, block_size, n, k, np.ascontiguousarray(packed), scale.astype(np.float32), np.ascontiguousarray(zp)
    )


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2], out[..., 1::2] = packed & 0x0F, packed >> 4
    return out


def unpack_zero_points(zp: np.ndarray, bits: int, k_blocks: int) -> np.ndarray:
    return (zp if bits == 8 else unpack_codes(zp, 4))[:, :k_blocks].astype(np.float32)


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """(N, K) -> (N, k_blocks, block_size), zero-padding K up to whole blocks."""
    n, k = w.shape
    pad = (-k) % block_size
    if pad:
        w = np.concatenate([w, np.zeros((n, pad), w.dtype)], axis=1)
    return w.reshape(n, -1, block_size)
