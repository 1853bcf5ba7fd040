"""Spec: the streamed export calibrates int4 on a draft graph on disk (export/draft_calibration.py) and measures
there what calibrate.py measures on the same graph in memory: the same sampled text, the same statistics; and its
compiled GPTQ rounds as the numpy loop it replaced did."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.calibrate import input_grams
from export.draft_calibration import calibrate_on_draft
from export.families import recipe_for
from export.fused_export import write_graph
from export.fused_graph import FloatPrecision
from export.gptq import gptq
from export.sources import load_checkpoint, resolve_source
from export.stream_quantize import HEAD
from export.weights import weights_for


@pytest.fixture(scope="module")
def fp32_draft(tiny_llama_dir, tmp_path_factory):
    loaded = load_checkpoint(resolve_source(str(tiny_llama_dir)))
    weights = weights_for(loaded.source, loaded.config)
    folder = tmp_path_factory.mktemp("draft")
    return write_graph(recipe_for(loaded.config), weights, folder, FloatPrecision(), inline=False)


def test_draft_calibration_equals_the_in_memory_one_on_the_same_graph(fp32_draft):
    path, decoder, inputs = fp32_draft
    grams, note, text = calibrate_on_draft(path, decoder, inputs, (HEAD,), "fp32")
    expected, expected_note = input_grams(onnx.load(str(path)), list(inputs), full=(HEAD,))
    assert note == expected_note
    assert text.shape == (note["sequences"], note["tokens"] // note["sequences"])
    assert set(grams) == set(expected) == set(inputs)
    for name in inputs:
        assert grams[name].shape == expected[name].shape, name
        np.testing.assert_allclose(grams[name], expected[name], rtol=1e-5, atol=1e-9, err_msg=name)
    assert grams[HEAD].ndim == 2 and grams["layers.0.qkv_proj"].ndim == 1


def test_given_text_is_read_not_sampled(fp32_draft):
    path, decoder, inputs = fp32_draft
    text = np.arange(2 * 8, dtype=np.int64).reshape(2, 8) % 50 + 3
    grams, note, read = calibrate_on_draft(path, decoder, inputs, (HEAD,), "fp32", text.copy())
    assert note == {"source": "given token ids", "tokens": 16}
    np.testing.assert_array_equal(read, text)
    expected, _ = input_grams(onnx.load(str(path)), list(inputs), full=(HEAD,), ids=list(text[0]))
    one_row, _, _ = calibrate_on_draft(path, decoder, inputs, (HEAD,), "fp32", text[:1].copy())
    for name in inputs:
        np.testing.assert_allclose(one_row[name], expected[name], rtol=1e-5, atol=1e-9, err_msg=name)


def _numpy_gptq(w, gram, bits, block_size):
    """The channel loop as gptq.py ran it in numpy before it was compiled (one channel at a time, every row)."""
    from export.blockwise import block_codes, pack, search_scale_zero
    from export.gptq import gptq_factors

    spread, importance, dead = gptq_factors(gram)
    top, (n, k) = 2**bits - 1, w.shape
    weight = np.array(w, np.float32)
    weight[:, dead] = 0.0
    codes = np.empty((n, k // block_size, block_size), np.float32)
    scales, zeros = np.empty((n, k // block_size), np.float32), np.empty((n, k // block_size), np.float32)
    for b in range(k // block_size):
        lo, hi = b * block_size, (b + 1) * block_size
        block = weight[:, lo:hi]
        weights = importance[None, None, lo:hi] / max(float(importance[lo:hi].mean()), 1e-12)
        scale, zero = search_scale_zero(block[:, None, :].copy(), top, weights)
        scales[:, b], zeros[:, b] = scale[:, 0], zero[:, 0]
        errors = np.empty((n, block_size), np.float32)
        for j in range(block_size):
            column = block[:, j]
            code = block_codes(column[:, None, None], scale, zero, top)[:, 0, 0]
            codes[:, b, j] = code
            error = (column - (code - zero[:, 0]) * scale[:, 0]) / spread[lo + j, lo + j]
            block[:, j + 1 :] -= np.outer(error, spread[lo + j, lo + j + 1 : hi])
            errors[:, j] = error
        weight[:, hi:] -= errors @ spread[lo:hi, hi:]
    return pack(codes, scales, zeros, bits, block_size, k)


def test_compiled_gptq_rounds_as_the_numpy_loop_did():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 320)).astype(np.float32) * rng.uniform(0.1, 3.0, 320).astype(np.float32)
    gram = (x.T @ x / len(x)).astype(np.float64)
    w = rng.normal(size=(300, 320)).astype(np.float32)
    compiled, reference = gptq(w, gram, 4, 32), _numpy_gptq(w, gram, 4, 32)

    def error(q):  # the product error on the calibration's activations, tr(D H D^T) / rows
        d = q.dequantize() - w
        return float(np.einsum("nk,kl,nl->", d, gram, d)) / len(w)

    assert np.mean(compiled.packed == reference.packed) > 0.99  # sums in vector lanes may tip a last bit
    assert error(compiled) == pytest.approx(error(reference), rel=1e-3)
