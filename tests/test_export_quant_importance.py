"""Spec: int4 codes minimise the error in W x: calibrated on the model's own text (GPTQ on the Gram matrix of each
MatMul's input, calibrate.py and gptq.py), or searched with each input channel weighed by its importance."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export.blockwise import quantize
from export.calibrate import START_TOKEN, input_grams
from export.gptq import gptq
from export.quantize import bits_for, block_size_for, weight_matmuls
from memgpt_runtime.manifest import read_manifest


def _weight_and_importance(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(64, 128)).astype(np.float32)  # (N, K): 4 blocks of 32 per row
    importance = np.exp(rng.normal(0, 2, 128))  # (K,) mean squares spread over decades, as in real activations
    return w, importance


def test_importance_weighted_codes_cut_the_error_of_the_product():
    w, importance = _weight_and_importance()
    x = np.random.default_rng(1).normal(size=(4096, 128)) * np.sqrt(importance)  # (tokens, K) with those mean squares

    def product_error(q):
        return float(((x @ (q.dequantize() - w).T) ** 2).mean())

    weighted = product_error(quantize(w, 4, 32, "searched", importance))
    assert weighted < 0.7 * product_error(quantize(w, 4, 32, "searched"))  # measured 3.1 against 5.2


def test_uniform_importance_gives_the_unweighted_codes():
    w, _ = _weight_and_importance()
    plain, uniform = quantize(w, 4, 32, "searched"), quantize(w, 4, 32, "searched", np.full(128, 3.0))
    np.testing.assert_array_equal(uniform.packed, plain.packed)
    np.testing.assert_array_equal(uniform.zero_points, plain.zero_points)
    np.testing.assert_allclose(uniform.scales, plain.scales, rtol=1e-6)


def test_a_block_the_calibration_never_drove_is_still_fitted():
    w, importance = _weight_and_importance()
    importance[:32] = 0.0  # the first block's channels were never active
    got, plain = quantize(w, 4, 32, "searched", importance), quantize(w, 4, 32, "searched")
    np.testing.assert_array_equal(got.packed[:, 0], plain.packed[:, 0])  # fitted as if unweighted
    np.testing.assert_allclose(got.scales[:, 0], plain.scales[:, 0], rtol=1e-6)


@pytest.mark.parametrize("importance", [np.ones(127), -np.ones(128), np.full(128, np.nan), np.full(128, np.inf)])
def test_importance_must_be_one_finite_non_negative_value_per_input_channel(importance):
    w, _ = _weight_and_importance()
    with pytest.raises(ValueError, match="importance must be 128 finite values >= 0"):
        quantize(w, 4, 32, "searched", importance)


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be 'rtn' or 'searched', got 'hqq'"):
        quantize(np.zeros((2, 32), np.float32), 4, 32, "hqq")


@pytest.mark.parametrize(
    "node, scheme, calibrated, expected",
    [
        ("lm_head", "int4", True, (4, "gptq")),  # GPTQ: +8% perplexity in all, decode ~4% faster than 8 bits
        ("lm_head", "int4", False, (8, "rtn")),  # an uncalibrated 4-bit head cost +10% perplexity
        ("layers.0.qkv_proj", "int4", True, (4, "weighted")),
        ("layers.0.qkv_proj", "int4", False, (8, "rtn")),  # unweighted 4-bit q|k|v cost +6%: kept at 8 bits
        ("/decoder/layers.0/self_attn/q_proj/MatMul", "int4", False, (8, "rtn")),
        ("layers.0.down_proj", "int4", False, (4, "searched")),
        ("layers.0.down_proj", "int8", True, (8, "rtn")),
    ],
)
def test_bits_for_each_weight_matmul(node, scheme, calibrated, expected):
    assert bits_for(node, "lm_head", scheme, calibrated) == expected


@pytest.mark.parametrize(
    "bits, k, expected",
    [
        (8, 576, 64),
        (8, 96, 32),  # K must be a whole number of blocks
        (4, 576, 32),  # every 4-bit weight (weighted, GPTQ head, searched) in the GGUF files' blocks: 64 cost more
        (4, 1536, 32),
        (4, 96, 32),
    ],
)
def test_block_size_for_each_weight_matmul(bits, k, expected):
    assert block_size_for(bits, k) == expected


def _fp32_graph(folder):
    return onnx.load(str(folder / read_manifest(folder).model_file))


def test_grams_are_x_transpose_x_of_each_matmul_input_as_pytorch_computes_it(tiny_llama_export, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    ids = [0, 17, 45, 101, 7, 300, 250, 12, 99, 64, 5, 220]
    proto = _fp32_graph(tiny_llama_export)
    grams, note = input_grams(proto, weight_matmuls(proto), full=weight_matmuls(proto), ids=ids)
    diagonals, _ = input_grams(proto, weight_matmuls(proto), full=["lm_head"], ids=ids)
    assert note == {"source": "given token ids", "tokens": len(ids)}

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    seen = {}
    modules = {
        f"layers.{i}.{node}": getattr(getattr(layer, part), name)
        for i, layer in enumerate(model.model.layers)
        for node, part, name in [
            ("qkv_proj", "self_attn", "q_proj"),
            ("o_proj", "self_attn", "o_proj"),
            ("gate_up_proj", "mlp", "gate_proj"),
            ("down_proj", "mlp", "down_proj"),
        ]
    }
    modules["lm_head"] = model.lm_head
    for node, module in modules.items():  # record each module's input, (positions, K)
        module.register_forward_hook(lambda m, args, out, n=node: seen.__setitem__(n, args[0][0].double().numpy()))
    with torch.no_grad():
        model(torch.tensor([ids]))
    assert sorted(grams) == sorted(modules)
    for node, x in seen.items():  # every position, the head's too (the calibration steps one token at a time)
        np.testing.assert_allclose(grams[node], x.T @ x / len(ids), rtol=1e-4, atol=1e-6)
        # only the nodes asked for in `full` get the whole matrix; the others its diagonal, the channels' mean squares
        expected = x.T @ x / len(ids) if node == "lm_head" else (x**2).mean(axis=0)
        np.testing.assert_allclose(diagonals[node], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fixture", ["tiny_llama_export", "tiny_gpt2_export"])  # "shared" and "concat" caches
def test_calibration_text_is_sampled_from_the_model_with_a_fixed_seed(request, fixture):
    proto = _fp32_graph(request.getfixturevalue(fixture))
    outputs = [o.name for o in proto.graph.output]
    nodes = weight_matmuls(proto)
    first, note = input_grams(proto, nodes, full=nodes, tokens=16, sequences=3)
    again, _ = input_grams(proto, nodes, full=nodes, tokens=16, sequences=3)
    other, _ = input_grams(proto, nodes, full=nodes, tokens=16, sequences=3, seed=1)
    assert note == {
        "source": "text sampled from the fp32 model",
        "seed": 0,
        "start_token": START_TOKEN,
        "sequences": 3,
        "tokens": 48,
    }
    assert [o.name for o in proto.graph.output] == outputs  # the extra outputs it read are gone again
    assert sorted(first) == sorted(weight_matmuls(proto))
    for node, gram in first.items():
        np.testing.assert_array_equal(gram, again[node])
        np.testing.assert_allclose(gram, gram.T)
        assert (np.diag(gram) > 0).all()
    assert any(not np.array_equal(first[node], other[node]) for node in first)  # another seed, another text


def test_a_graph_without_a_kv_cache_gets_no_calibration():
    weight = np.ones((4, 8), np.float32)  # (K, N)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="head")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    assert input_grams(helper.make_model(graph), ["head"]) == (
        {},
        {"source": "none (not a decoder graph with a KV cache): unweighted errors"},
    )


def _correlated_activations(rows: int, seed: int) -> np.ndarray:
    """(rows, 128) activations with correlated channels and scales over decades, like a layer's inputs."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(128, 128)) * np.exp(rng.normal(0, 1, 128))[None, :]
    return np.random.default_rng(seed).normal(size=(rows, 128)) @ mix


def test_gptq_cuts_the_product_error_on_text_it_did_not_see():
    w, _ = _weight_and_importance()  # (64, 128)
    seen, unseen = _correlated_activations(4096, 1), _correlated_activations(4096, 2)
    gram = seen.T @ seen / len(seen)

    def product_error(q, x):
        return float(((x @ (q.dequantize() - w).T) ** 2).mean())

    searched = quantize(w, 4, 32, "searched", np.diag(gram))
    rounded = gptq(w, gram, 4, 32)
    assert product_error(rounded, unseen) < 0.9 * product_error(searched, unseen)  # measured 358 against 416
    assert rounded.packed.shape == searched.packed.shape and rounded.zero_points.shape == searched.zero_points.shape


def test_gptq_refuses_a_partial_block():
    with pytest.raises(ValueError, match="K=100 is not a multiple of the block size 32"):
        gptq(np.zeros((4, 100), np.float32), np.eye(100), 4, 32)
