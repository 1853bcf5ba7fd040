"""Spec: a decoder-only model the fused graph does not cover goes through optimum's traced graph, as GPT-2 does,
validated against PyTorch and generating the same tokens as transformers.

Tiny random models of a few families optimum exports (rotary and learned positions, multi-query and grouped
attention, parallel blocks, a mixture of experts), and a fused family whose config the fused graph refuses
(Phi-3 with "longrope" scaling, which depends on the sequence length).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import memgpt_runtime as mr
from benchmarks import tiny_models as tm
from memgpt_runtime.manifest import read_manifest

BASE = dict(vocab_size=tm.VOCAB_SIZE, bos_token_id=tm.BOS_ID, eos_token_id=tm.EOS_ID, pad_token_id=tm.PAD_ID)
LAYERS = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
CONFIGS = {
    "gpt_neox": dict(**LAYERS, intermediate_size=128, max_position_embeddings=256),
    "phi": dict(**LAYERS, intermediate_size=128, max_position_embeddings=256),
    "falcon": dict(**LAYERS),  # multi-query: one key/value head
    "opt": dict(**LAYERS, ffn_dim=128, max_position_embeddings=256, word_embed_proj_dim=64),
    "qwen3_moe": dict(
        **LAYERS,
        num_key_value_heads=2,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        head_dim=16,
        max_position_embeddings=256,
    ),
    "phi3": dict(
        **LAYERS,
        intermediate_size=128,
        max_position_embeddings=64,
        original_max_position_embeddings=32,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
    ),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def traced(request, tmp_path_factory):
    from export import export_model
    from export.progress import Progress

    torch.manual_seed(0)
    config = AutoConfig.for_model(request.param, **BASE, **CONFIGS[request.param])
    model = AutoModelForCausalLM.from_config(config).eval()
    hf = tm._save(
        model, tm.build_tokenizer(add_bos=False), model.generation_config, tmp_path_factory.mktemp("hf") / request.param
    )
    folder = export_model(
        str(hf), output=tmp_path_factory.mktemp("export") / request.param, progress=Progress(quiet=True)
    )
    return mr.load(folder), AutoModelForCausalLM.from_pretrained(hf).eval(), folder


def test_the_traced_graph_is_used_and_validated(traced):
    _, _, folder = traced
    m = read_manifest(folder)
    assert m.extra == {"graph": "optimum"} and m.kv_cache.layout == "concat"
    assert m.validation["fp32"]["passed"] is True and m.validation["fp32"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("prompt", [[5, 17, 42, 99, 7], [33, 34, 35, 36, 37, 38, 39, 40]])
def test_greedy_matches_transformers(traced, prompt):
    lm, torch_model, _ = traced
    ours = lm.generate([prompt], max_new_tokens=16, do_sample=False, eos_token_id=[])
    with torch.no_grad():
        ref = torch_model.generate(
            torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=tm.PAD_ID
        ).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_padded_batch_matches_transformers(traced):
    lm, torch_model, _ = traced
    ids, mask = lm.tokenizer.pad([[5, 17, 42, 99, 7], [250, 12], [33, 34, 35]])
    ours = lm.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=2, do_sample=False, eos_token_id=[])
    with torch.no_grad():
        ref = torch_model.generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            max_new_tokens=8,
            num_beams=2,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tm.PAD_ID,
        ).numpy()
    np.testing.assert_array_equal(ours, ref)
