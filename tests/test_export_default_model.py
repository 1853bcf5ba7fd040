"""Spec (slow): the default model, SmolLM2-135M-Instruct from its GGUF file, exported at fp32 and int8."""

from __future__ import annotations

import onnx
import pytest
from tokenizers import Tokenizer

from export.quantize import weight_matmuls
from memgpt_runtime.manifest import read_manifest

pytestmark = pytest.mark.slow
SMOLLM2_WEIGHT_MATMULS = 30 * 4 + 1  # 30 fused layers of q|k|v, o, gate|up, down; plus the tied head


def test_default_fp32_export_matches_pytorch_within_1e_3(smollm2_fp32_export):
    m = read_manifest(smollm2_fp32_export)
    report = m.validation["fp32"]
    assert report["passed"] is True
    assert report["max_abs_diff"] <= 1e-3
    assert all(case["top1_agreement"] == 1.0 for case in report["cases"].values())


def test_default_manifest_describes_smollm2(smollm2_fp32_export):
    m = read_manifest(smollm2_fp32_export)
    assert (m.architecture, m.vocab_size, m.context_length) == ("llama", 49152, 8192)
    assert (m.kv_cache.num_layers, m.kv_cache.num_kv_heads, m.kv_cache.head_size) == (30, 3, 64)
    # ids from the model's generation config: the GGUF tokenizer's own eos_token_id (1) is wrong
    assert (m.tokens.bos_token_id, m.tokens.eos_token_ids, m.tokens.pad_token_id) == (1, [2], 2)
    assert m.generation_defaults == {"eos_token_id": [2], "pad_token_id": 2}
    assert "<|im_start|>" in m.chat_template
    assert (m.source["kind"], m.source["model_type"]) == ("default", "llama")
    assert m.source["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_default_tokenizer_json_adds_bos_like_transformers(smollm2_fp32_export):
    tok = Tokenizer.from_file(str(smollm2_fp32_export / "tokenizer.json"))
    assert tok.encode("Hello world").ids == [1, 19556, 905]


def test_default_int8_export_quantizes_all_121_weight_matmuls(smollm2_int8_export, smollm2_fp32_export):
    m = read_manifest(smollm2_int8_export)
    assert len(m.quantization["nodes"]) == SMOLLM2_WEIGHT_MATMULS
    graph = onnx.load(str(smollm2_int8_export / m.model_file), load_external_data=False)
    assert weight_matmuls(graph) == []
    assert sum(n.op_type == "MatMulNBits" for n in graph.graph.node) == SMOLLM2_WEIGHT_MATMULS
    fp32_size = (smollm2_fp32_export / "model.onnx").stat().st_size
    assert (smollm2_int8_export / m.model_file).stat().st_size < 0.55 * fp32_size
    assert m.validation["int8"]["top1_agreement"] >= 0.9
