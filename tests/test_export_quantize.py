"""Spec: int8/int4 exports turn every weight MatMul, the tied LM head included, into MatMulNBits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export.quantize import fold_transposed_weights, weight_matmuls
from memgpt_runtime.manifest import read_manifest

LLAMA_WEIGHT_MATMULS = 2 * 4 + 1  # per layer of the fused graph q|k|v, o, gate|up, down; plus the LM head


def _graph(folder):
    return onnx.load(str(folder / read_manifest(folder).model_file))


@pytest.mark.parametrize("export_fixture, bits", [("tiny_llama_int8", 8), ("tiny_llama_int4", 4)])
def test_quantized_export_leaves_no_float_weight_matmul(request, export_fixture, bits):
    folder = request.getfixturevalue(export_fixture)
    graph = _graph(folder)
    nbits = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
    assert weight_matmuls(graph) == []  # no MatMul/Gemm with a float constant weight left
    assert len(nbits) == LLAMA_WEIGHT_MATMULS
    bits_of = {n.name: a.i for n in nbits for a in n.attribute if a.name == "bits"}
    assert bits_of.pop(f"lm_head_Q{bits}") == bits  # the tied head is quantized too (int4: rounded by GPTQ)
    assert set(bits_of.values()) == {bits}  # int4: q|k|v too, now that its codes are importance-weighted
    blocks = {n.name: a.i for n in nbits for a in n.attribute if a.name == "block_size"}
    # int8 in blocks of 64; int4 in blocks of 32, the layers (importance-weighted) as the head (rounded by GPTQ)
    assert blocks == {name: 32 if bits == 4 else 64 for name in blocks}
    assert {a.i for n in nbits for a in n.attribute if a.name == "accuracy_level"} == {4}
    tables = [n for n in graph.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")]
    assert [(n.op_type, n.input[0]) for n in tables] == [("GatherBlockQuantized", "embed_tokens.weight_Q8")]


@pytest.mark.parametrize(
    "export_fixture, scheme, bits", [("tiny_llama_int8", "int8", 8), ("tiny_llama_int4", "int4", 4)]
)
def test_manifest_lists_the_quantized_nodes(request, export_fixture, scheme, bits):
    q = read_manifest(request.getfixturevalue(export_fixture)).quantization
    assert (q["scheme"], q["bits"], q["block_size"]) == (scheme, bits, 32)
    assert len(q["nodes"]) == LLAMA_WEIGHT_MATMULS
    assert q["nodes"][-1] == "lm_head"
    assert (q["lm_head"]["node"], q["lm_head"]["bits"]) == ("lm_head", bits)
    assert (
        q["algorithm"] == {"int8": "rtn 8-bit", "int4": "importance-weighted searched 4-bit, GPTQ 4-bit head"}[scheme]
    )
    assert q["bits_by_node"] == {name: bits for name in q["nodes"]}
    # int8 in blocks of 64, int4 in blocks of 32
    assert q["block_size_by_node"] == {n: 32 if scheme == "int4" else 64 for n in q["nodes"]}
    calibration = {
        "source": "text sampled from the fp32 model",
        "seed": 0,
        "start_token": 0,
        "sequences": 16,
        "tokens": 2048,
    }
    assert q.get("calibration") == (calibration if scheme == "int4" else None)  # int8 codes need no calibration


@pytest.mark.parametrize(
    "export_fixture, scheme, max_diff", [("tiny_llama_int8", "int8", 0.05), ("tiny_llama_int4", "int4", 0.5)]
)
def test_quantized_graph_is_measured_against_pytorch(request, export_fixture, scheme, max_diff):
    validation = read_manifest(request.getfixturevalue(export_fixture)).validation
    assert validation["fp32"]["passed"] is True
    assert 0 < validation[scheme]["max_abs_diff"] < max_diff
    assert set(validation[scheme]["cases"]) == {"prompt", "prompt_then_past", "left_padded_batch"}


def test_quantized_exports_are_smaller(tiny_llama_export, tiny_llama_int8, tiny_llama_int4):
    sizes = [(f / "model.onnx").stat().st_size for f in (tiny_llama_export, tiny_llama_int8, tiny_llama_int4)]
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.parametrize(
    "hf_fixture, expected",
    [
        (
            "tiny_gpt2_dir",
            2 * 4 + 1,
        ),  # per layer c_attn, c_proj, c_fc, mlp c_proj (Gemm in ONNX); the head via Transpose(wte)
        ("tiny_qwen2_dir", LLAMA_WEIGHT_MATMULS),
    ],
)
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_other_architectures_quantize_every_weight_matmul(request, tmp_path, hf_fixture, expected, scheme):
    from export import export_model
    from export.progress import Progress

    folder = export_model(
        str(request.getfixturevalue(hf_fixture)),
        output=tmp_path / "out",
        quantize=scheme,
        progress=Progress(quiet=True),
    )
    graph = _graph(folder)
    assert weight_matmuls(graph) == []
    assert sum(n.op_type == "MatMulNBits" for n in graph.graph.node) == expected
    m = read_manifest(folder)
    assert len(m.quantization["nodes"]) == expected
    assert m.validation[scheme]["top1_agreement"] >= 0.9  # measured against PyTorch fp32, with and without past
    if scheme == "int4":  # calibrated on both cache layouts: GPT-2's optimum graph ("concat"), Qwen2's fused ("shared")
        assert m.quantization["algorithm"] == "importance-weighted searched 4-bit, GPTQ 4-bit head"
        assert m.quantization["calibration"]["tokens"] == 2048


def test_an_untied_llama_head_is_quantized_too(tmp_path):
    from benchmarks import tiny_models
    from export import export_model
    from export.progress import Progress

    source = tiny_models.build_tiny_llama(tmp_path / "untied", tied=False)
    folder = export_model(str(source), output=tmp_path / "out", quantize="int4", progress=Progress(quiet=True))
    assert read_manifest(folder).quantization["nodes"][-1] == "lm_head"
    assert weight_matmuls(_graph(folder)) == []


def test_fold_transposed_weights_makes_the_head_weight_a_constant():
    embedding = np.arange(12, dtype=np.float32).reshape(4, 3)  # (vocab, hidden)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"]),
        helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["hidden", "table_t"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1]),
            helper.make_tensor_value_info("hidden", onnx.TensorProto.FLOAT, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("embedded", onnx.TensorProto.FLOAT, [1, 3]),
        ],
        [numpy_helper.from_array(embedding, "table")],
    )
    proto = helper.make_model(graph)
    assert weight_matmuls(proto) == []  # the stock quantizer would skip this head

    assert fold_transposed_weights(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["Gather", "MatMul"]
    assert weight_matmuls(proto) == ["head"]
    folded = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(folded["table_transposed_const"], embedding.T)
    np.testing.assert_array_equal(folded["table"], embedding)  # the Gather keeps its table


@pytest.mark.parametrize("bits", [8, 4])
def test_round_to_nearest_reproduces_the_weight_within_half_a_step(bits):
    from export.blockwise import quantize

    w = np.random.default_rng(0).normal(size=(48, 96)).astype(np.float32)  # (N, K): 3 blocks of 32 per row
    q = quantize(w, bits, 32, "rtn")
    assert (q.packed.shape, q.scales.shape) == ((48, 3, 32 * bits // 8), (48, 3))
    span = w.reshape(48, 3, 32).max(axis=2) - w.reshape(48, 3, 32).min(axis=2)  # (N, blocks)
    error = np.abs(q.dequantize() - w).reshape(48, 3, 32).max(axis=2)
    assert (error <= span * 0.5 / (2**bits - 1) * 1.0001 + 1e-6).all()


def test_searched_codes_beat_round_to_nearest():
    from export.blockwise import quantize

    w = np.random.default_rng(1).normal(size=(64, 128)).astype(np.float32)
    errors = {m: float(((quantize(w, 4, 32, m).dequantize() - w) ** 2).mean()) for m in ("rtn", "searched")}
    assert errors["searched"] < 0.95 * errors["rtn"]


def test_a_block_of_zeros_stays_zero():
    from export.blockwise import quantize

    w = np.zeros((4, 64), np.float32)
    w[:, 32:] = np.linspace(-1, 1, 32)
    for method in ("rtn", "searched"):
        np.testing.assert_array_equal(quantize(w, 4, 32, method).dequantize()[:, :32], 0)
