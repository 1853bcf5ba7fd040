"""Read a GGUF tensor's own codes and scales, block by block, in the form onnxruntime's MatMulNBits takes them.

Each llama.cpp block format writes its weights as `w = scale * (code - zero_point) + minimum` per block of
16 or 32 weights along a row, with an integer code, a float scale, one integer zero point for the whole format
and, in the formats with a per-block minimum, a float minimum. `decode` unpacks a tensor's bytes into those
parts without rounding anything: the K-quants' 6-bit sub-block scales and minimums are multiplied out into
float32 scales as llama.cpp does (`d * sc`, `dmin * m`: exact in float32), 5- and 6-bit codes widen to 8 bits
(Q6_K: codes 0..63 around zero point 32), 3-bit codes to 4 bits. `ExactBlocks.dequantize` then gives the same
float32 values, bit for bit, as gguf-py's `gguf.quants.dequantize` (which transformers uses to load a GGUF).
Formats whose values are not integer codes times a per-block scale (the IQ2/IQ3/IQ1 grids, ternary, FP4) and
plain float tensors are not decoded (`decodable`). Layouts follow ggml's `ggml-quants.c` / gguf-py `quants.py`.
This file reads bytes only; `gguf_quantize.py` builds the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

QK_K = 256  # weights per K-quant super-block


@dataclass(frozen=True)
class ExactBlocks:
    """Rows of a GGUF tensor as MatMulNBits parts: w = scales * (codes - zero_point) [+ minimums], per block."""

    type_name: str  # the GGUF type, e.g. "Q4_1"
    bits: int  # 4 or 8: the MatMulNBits width that holds every code
    block_size: int  # 16 or 32 weights along a row
    zero_point: int  # the same integer for every block
    codes: np.ndarray  # (rows, K) uint8, one code per weight
    scales: np.ndarray  # (rows, K // block_size) float32
    minimums: np.ndarray | None  # (rows, K // block_size) float32, or None for a format without them

    @property
    def format(self) -> tuple[int, int, int, bool]:
        """What rows must share to sit in one MatMulNBits: (bits, block size, zero point, has minimums)."""
        return self.bits, self.block_size, self.zero_point, self.minimums is not None

    def dequantize(self) -> np.ndarray:
        """(rows, K) float32, computed in the order gguf-py computes it."""
        rows, k = self.codes.shape
        codes = self.codes.reshape(rows, -1, self.block_size).astype(np.float32) - np.float32(self.zero_point)
        w = self.scales[:, :, None] * codes
        if self.minimums is not None:
            w = w + self.minimums[:, :, None]
        return w.reshape(rows, k)

    def take(self, rows: np.ndarray) -> ExactBlocks:
        """The same format restricted to `rows` (in that order)."""
        minimums = None if self.minimums is None else self.minimums[rows]
        return ExactBlocks(
            self.type_name, self.bits, self.block_size, self.zero_point, self.codes[rows], self.scales[rows], minimums
        )


def decodable(type_name: str) -> bool:
    return type_name in _DECODERS


def decode(type_name: str, data: np.ndarray) -> ExactBlocks:
    """Unpack `data`, (rows, bytes per row) uint8 as gguf.GGUFReader gives a quantized tensor, into ExactBlocks."""
    decoder, block_bytes = _DECODERS[type_name]
    rows = data.shape[0]
    blocks = np.ascontiguousarray(data, np.uint8).reshape(rows, -1, block_bytes)  # (rows, super-blocks, bytes)
    bits, block_size, zero, codes, scales, minimums = decoder(blocks)
    k = codes.size // rows

    def flat(a: np.ndarray | None, dtype) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a.reshape(rows, -1), dtype)

    return ExactBlocks(
        type_name,
        bits,
        block_size,
        zero,
        flat(codes, np.uint8).reshape(rows, k),
        flat(scales, np.float32),
        flat(minimums, np.float32),
    )


def _f16(b: np.ndarray) -> np.ndarray:
    """(rows, blocks, 2) bytes -> (rows, blocks, 1) float32 of the little-endian fp16 they hold."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(rows, blocks, 16) bytes -> (rows, blocks, 32): the low nibbles are weights 0..15, the high ones 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(rows, blocks, 4) bytes of a little-endian u32 -> (rows, blocks, 32) bits, bit j for weight j."""
    word = np.ascontiguousarray(qh).view(np.uint32)  # (rows, blocks, 1)
    return ((word >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


# Each decoder: (rows, blocks, block bytes) -> (bits, block size, zero point, codes, scales, minimums) with codes
# (rows, blocks, sub-blocks, block size) or (rows, blocks, block size), scales/minimums one per sub-block.


def _q4_0(b):  # d, 16 bytes of 4-bit codes; w = d * (q - 8)
    return 4, 32, 8, _nibbles(b[..., 2:18]), _f16(b[..., 0:2]), None


def _q4_1(b):  # d, m, 16 bytes of codes; w = d * q + m
    return 4, 32, 0, _nibbles(b[..., 4:20]), _f16(b[..., 0:2]), _f16(b[..., 2:4])


def _q5_0(b):  # d, 32 high bits, 16 bytes of low nibbles; w = d * (q - 16)
    return 8, 32, 16, _nibbles(b[..., 6:22]) | (_high_bits(b[..., 2:6]) << 4), _f16(b[..., 0:2]), None


def _q5_1(b):  # d, m, 32 high bits, low nibbles; w = d * q + m
    return 8, 32, 0, _nibbles(b[..., 8:24]) | (_high_bits(b[..., 4:8]) << 4), _f16(b[..., 0:2]), _f16(b[..., 2:4])


def _q8_0(b):  # d, 32 int8 codes; w = d * q, stored here as q + 128 around zero point 128
    codes = (b[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return 8, 32, 128, codes, _f16(b[..., 0:2]), None


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit minimums, (rows, blocks, 8) each."""
    d, m, md = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_low_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: (rows, blocks, 128) -> (rows, blocks, 8, 32); sub-blocks 2i and 2i+1 share 32 bytes, low nibble first."""
    chunks = qs.reshape(*qs.shape[:-1], 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(2, 1)
    return (chunks & 0x0F).reshape(*qs.shape[:-1], 8, 32)


def _q4_k(b):  # d, dmin, 12 bytes of 6-bit scales/minimums, 128 bytes of codes; w = d*sc*q - dmin*m per 32
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    return 4, 32, 0, _k_low_nibbles(b[..., 16:144]), d * sc, -(dmin * mn)


def _q5_k(b):  # as Q4_K, plus a fifth bit per weight: sub-block i takes bit i of each of the 32 qh bytes
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    qh = b[..., 16:48]
    high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # (rows, blocks, 8, 32)
    return 8, 32, 0, _k_low_nibbles(b[..., 48:176]) | (high << 4), d * sc, -(dmin * mn)


def _q6_k(b):  # 128 bytes low nibbles, 64 bytes of 2 high bits, 16 int8 scales, d; w = d*sc*(q - 32) per 16
    lead = b.shape[:-1]
    ql = b[..., 0:128].reshape(*lead, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(2, 1)
    ql = (ql & 0x0F).reshape(*lead, 8, 32)
    qh = b[..., 128:192].reshape(*lead, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    qh = (qh & 0x03).reshape(*lead, 8, 32)
    codes = (ql | (qh << 4)).reshape(*lead, 16, 16)
    scales = b[..., 192:208].view(np.int8).astype(np.float32)
    return 8, 16, 32, codes, _f16(b[..., 208:210]) * scales, None


def _q2_k(b):  # 16 bytes of 4-bit scale|minimum pairs, 64 bytes of 2-bit codes, d, dmin; w = d*sc*q - dmin*m per 16
    lead = b.shape[:-1]
    s = b[..., 0:16]
    qs = b[..., 16:80].reshape(*lead, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    codes = (qs & 0x03).reshape(*lead, 16, 16)
    d, dmin = _f16(b[..., 80:82]), _f16(b[..., 82:84])
    return 4, 16, 0, codes, d * (s & 0x0F).astype(np.float32), -(dmin * (s >> 4).astype(np.float32))


def _q3_k(
    b,
):  # 32 bytes high-bit mask, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales, d; w = d*(sc-32)*q, q in -4..3
    lead = b.shape[:-1]
    hmask, qs, s = b[..., 0:32], b[..., 32:96], b[..., 96:108]
    low = (s[..., 0:8].reshape(*lead, 1, 8) >> np.array([0, 4], np.uint8).reshape(2, 1)).reshape(*lead, 16)
    high = (s[..., 8:12].reshape(*lead, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)).reshape(*lead, 16)
    scales = ((low & 0x0F) | ((high & 0x03) << 4)).astype(np.float32) - 32
    ql = (qs.reshape(*lead, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)).reshape(*lead, 16, 16) & 3
    qh = (hmask.reshape(*lead, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(8, 1)).reshape(*lead, 16, 16) & 1
    codes = ql + (qh << 2)  # q + 4: the mask bit set means no -4 offset
    return 4, 16, 4, codes, _f16(b[..., 108:110]) * scales, None


_DECODERS: dict[str, tuple[Callable, int]] = {  # type -> (decoder, bytes per block)
    "Q4_0": (_q4_0, 18),
    "Q4_1": (_q4_1, 20),
    "Q5_0": (_q5_0, 22),
    "Q5_1": (_q5_1, 24),
    "Q8_0": (_q8_0, 34),
    "Q2_K": (_q2_k, 84),
    "Q3_K": (_q3_k, 110),
    "Q4_K": (_q4_k, 144),
    "Q5_K": (_q5_k, 176),
    "Q6_K": (_q6_k, 210),
}
