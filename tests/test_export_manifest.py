"""Spec: what `manifest.json` says for each supported architecture, read back through the runtime's reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from benchmarks import tiny_models as tm
from memgpt_runtime.manifest import read_manifest

FUSED_INPUTS = dict(
    attention_mask=None,
    position_ids=None,
    seqlens_k="seqlens_k",
    total_sequence_length="total_sequence_length",
    last_index="last_index",
)
TRACED_INPUTS = dict(
    attention_mask="attention_mask",
    position_ids="position_ids",
    seqlens_k=None,
    total_sequence_length=None,
    last_index=None,
)


@pytest.mark.parametrize(
    "export_fixture, architecture, layers, kv_heads, head_size, context, graph, layout, inputs",
    [
        ("tiny_llama_export", "llama", 2, 2, 16, 256, "fused", "shared", FUSED_INPUTS),
        ("tiny_qwen2_export", "qwen2", 2, 2, 16, 512, "fused", "shared", FUSED_INPUTS),
        ("tiny_gpt2_export", "gpt2", 2, 4, 8, 128, "optimum", "concat", TRACED_INPUTS),
    ],
)
def test_manifest_records_the_graph_and_cache_shape(
    request, export_fixture, architecture, layers, kv_heads, head_size, context, graph, layout, inputs
):
    m = read_manifest(request.getfixturevalue(export_fixture))
    assert (m.format, m.version, m.kind) == ("memgpt-runtime-manifest", 3, "decoder-only")
    assert (m.model_file, m.tokenizer_file) == ("model.onnx", "tokenizer.json")
    assert m.architecture == architecture
    assert m.extra == {"graph": graph}
    assert m.vocab_size == tm.VOCAB_SIZE
    assert m.context_length == context
    assert (m.graph.input_ids, m.graph.logits) == ("input_ids", "logits")
    assert {name: getattr(m.graph, name) for name in inputs} == inputs
    kv = m.kv_cache
    assert (kv.layout, kv.num_layers, kv.num_kv_heads, kv.head_size, kv.dtype) == (
        layout,
        layers,
        kv_heads,
        head_size,
        "float32",
    )
    assert (kv.past_key, kv.past_value) == ("past_key_values.{i}.key", "past_key_values.{i}.value")
    assert (kv.present_key, kv.present_value) == ("present.{i}.key", "present.{i}.value")


@pytest.mark.parametrize(
    "export_fixture, bos, eos, pad, defaults",
    [
        (
            "tiny_llama_export",
            tm.BOS_ID,
            [tm.EOS_ID, tm.IM_END_ID],
            tm.PAD_ID,
            {"eos_token_id": [tm.EOS_ID, tm.IM_END_ID], "pad_token_id": tm.PAD_ID, "max_new_tokens": 32},
        ),
        (
            "tiny_qwen2_export",
            tm.BOS_ID,
            [tm.IM_END_ID],
            tm.PAD_ID,
            {"eos_token_id": [tm.IM_END_ID], "pad_token_id": tm.PAD_ID, "max_new_tokens": 16},
        ),
        ("tiny_gpt2_export", tm.BOS_ID, [tm.EOS_ID], None, {"eos_token_id": [tm.EOS_ID]}),
    ],
)
def test_manifest_records_token_ids_and_only_explicit_generation_defaults(
    request, export_fixture, bos, eos, pad, defaults
):
    m = read_manifest(request.getfixturevalue(export_fixture))
    assert (m.tokens.bos_token_id, m.tokens.eos_token_ids, m.tokens.pad_token_id) == (bos, eos, pad)
    assert m.generation_defaults == defaults  # no transformers default such as max_length=20
    assert m.chat_template == tm.CHAT_TEMPLATE


def test_manifest_records_source_and_fp32_quantization(tiny_llama_export, tiny_llama_dir):
    m = read_manifest(tiny_llama_export)
    assert m.source["kind"] == "folder"
    assert m.source["path"] == str(tiny_llama_dir)
    assert m.source["model_type"] == "llama"
    assert m.source["transformers_version"].startswith("4.57")
    assert m.quantization == {"scheme": "fp32", "bits": 32, "block_size": None, "nodes": []}


@pytest.mark.parametrize("export_fixture", ["tiny_llama_export", "tiny_qwen2_export", "tiny_gpt2_export"])
def test_fp32_validation_passes_and_is_recorded(request, export_fixture):
    report = read_manifest(request.getfixturevalue(export_fixture)).validation["fp32"]
    assert report["passed"] is True
    assert report["tolerance"] == 1e-3
    assert set(report["cases"]) == {"prompt", "prompt_then_past", "left_padded_batch"}
    assert report["max_abs_diff"] < 1e-4  # tiny random models are far below the tolerance
    assert all(case["top1_agreement"] == 1.0 for case in report["cases"].values())


def test_manifest_json_is_plain_json_with_format_first(tiny_llama_export):
    body = json.loads((tiny_llama_export / "manifest.json").read_text(encoding="utf-8"))
    assert list(body)[:2] == ["format", "version"]


def test_export_folder_holds_only_the_model_the_tokenizer_and_the_manifest(tiny_llama_export):
    assert sorted(p.name for p in tiny_llama_export.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]


TEXTS = ["Hello world", "Café naïve 東京 😀", "  two  spaces\nand a newline", "user: hi<|im_end|>\nassistant: "]


@pytest.mark.parametrize(
    "export_fixture, hf_fixture",
    [
        ("tiny_llama_export", "tiny_llama_dir"),  # adds BOS
        ("tiny_gpt2_export", "tiny_gpt2_dir"),  # adds nothing
    ],
)
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_encodes_exactly_like_transformers(request, export_fixture, hf_fixture, text):
    exported = Tokenizer.from_file(str(request.getfixturevalue(export_fixture) / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(request.getfixturevalue(hf_fixture))
    assert exported.encode(text).ids == hf(text)["input_ids"]
    if "<|" not in text:  # plain text (multibyte included) round-trips through the ByteLevel decoder
        assert exported.decode(exported.encode(text).ids, skip_special_tokens=True) == text


def test_traced_graph_runs_a_prompt_with_an_empty_past(tiny_gpt2_export):
    import onnxruntime as ort

    m = read_manifest(tiny_gpt2_export)
    session = ort.InferenceSession(str(tiny_gpt2_export / m.model_file), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, m.kv_cache.num_kv_heads, 0, m.kv_cache.head_size), dtype=np.float32)
    feed = {
        m.graph.input_ids: np.array([[7, 5, 6]]),
        m.graph.attention_mask: np.ones((1, 3), dtype=np.int64),
        m.graph.position_ids: np.array([[0, 1, 2]]),
    }
    for i in range(m.kv_cache.num_layers):
        feed[m.kv_cache.past_key.format(i=i)] = empty
        feed[m.kv_cache.past_value.format(i=i)] = empty
    logits, present_key = session.run([m.graph.logits, m.kv_cache.present_key.format(i=0)], feed)
    assert logits.shape == (1, 3, m.vocab_size)
    assert present_key.shape == (1, m.kv_cache.num_kv_heads, 3, m.kv_cache.head_size)
