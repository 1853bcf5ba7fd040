"""Spec: export/gguf_blocks.py reads each GGUF block format's own codes, scales and minimums, losing nothing."""

from __future__ import annotations

import numpy as np
import pytest

import gguf_files
from export.gguf_blocks import decodable, decode

# type -> (bits of the MatMulNBits codes, block size, zero point, has minimums, byte offsets of its fp16 fields)
FORMATS = {
    "Q4_0": (4, 32, 8, False, [0]),
    "Q4_1": (4, 32, 0, True, [0, 2]),
    "Q5_0": (8, 32, 16, False, [0]),
    "Q5_1": (8, 32, 0, True, [0, 2]),
    "Q8_0": (8, 32, 128, False, [0]),
    "Q2_K": (4, 16, 0, True, [80, 82]),
    "Q3_K": (4, 16, 4, False, [108]),
    "Q4_K": (4, 32, 0, True, [0, 2]),
    "Q5_K": (8, 32, 0, True, [0, 2]),
    "Q6_K": (8, 16, 32, False, [208]),
}


def _random_tensor(type_name: str, rows: int, blocks: int, seed: int = 0) -> np.ndarray:
    """(rows, bytes) of random blocks: every bit pattern of the codes and scales, with finite fp16 fields."""
    import gguf
    from gguf.constants import GGML_QUANT_SIZES

    _, block_bytes = GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (rows, blocks, block_bytes), dtype=np.uint8)
    for offset in FORMATS[type_name][4]:
        data[..., offset : offset + 2] = rng.normal(0, 0.01, (rows, blocks, 1)).astype(np.float16).view(np.uint8)
    return data.reshape(rows, -1)


@pytest.mark.parametrize("type_name", sorted(FORMATS))
def test_decoded_blocks_give_ggufs_dequantized_values_bit_for_bit(type_name):
    import gguf

    data = _random_tensor(type_name, rows=3, blocks=4)
    blocks = decode(type_name, data)
    want = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])  # (3, K) as transformers loads it
    assert blocks.codes.shape == want.shape and blocks.codes.dtype == np.uint8
    np.testing.assert_array_equal(blocks.dequantize(), want)


@pytest.mark.parametrize("type_name", sorted(FORMATS))
def test_each_format_maps_onto_integer_codes_of_4_or_8_bits(type_name):
    bits, block_size, zero_point, has_minimums = FORMATS[type_name][:4]
    blocks = decode(type_name, _random_tensor(type_name, rows=2, blocks=2))
    assert (blocks.bits, blocks.block_size, blocks.zero_point, blocks.minimums is not None) == (
        bits,
        block_size,
        zero_point,
        has_minimums,
    )
    assert int(blocks.codes.max()) < 2**bits
    assert blocks.scales.shape == (2, blocks.codes.shape[1] // block_size)


def test_taking_rows_keeps_their_codes_scales_and_minimums():
    blocks = decode("Q4_1", _random_tensor("Q4_1", rows=5, blocks=2))
    picked = blocks.take(np.array([4, 0, 2]))
    np.testing.assert_array_equal(picked.dequantize(), blocks.dequantize()[[4, 0, 2]])


@pytest.mark.parametrize(
    "type_name, expected",
    [
        ("Q4_K", True),
        ("Q6_K", True),
        ("F16", False),
        ("F32", False),
        ("BF16", False),
        ("IQ2_XXS", False),
        ("IQ4_NL", False),
        ("TQ1_0", False),
    ],
)
def test_only_integer_code_formats_are_decodable(type_name, expected):
    assert decodable(type_name) is expected


@pytest.mark.parametrize("type_name, tolerance", [("Q4_K", 0.03), ("Q6_K", 0.008)])
def test_the_tests_own_k_quantizers_write_blocks_gguf_reads_back(type_name, tolerance):
    import gguf

    values = np.random.default_rng(1).normal(0, 0.1, (4, 512)).astype(np.float32)
    data = gguf_files.quantize(values, type_name)
    back = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])
    assert np.abs(back - values).max() < tolerance
    np.testing.assert_array_equal(decode(type_name, data).dequantize(), back)
