"""Tiny random GGUF files of the families transformers 4.57 loads from GGUF (gemma2, gemma3, phi3, qwen3, stablelm).

A tiny HF model is written as llama.cpp's converter would: llama.cpp's tensor names (the inverse of transformers'
`get_gguf_hf_weights_map`), Gemma's norm weights stored as 1 + w (transformers subtracts 1 on load), the
family's metadata keys, float32 tensors (so the weights survive exactly) and the tiny byte-level BPE vocabulary.
transformers rebuilds the config from the GGUF keys it knows and defaults for the rest (Gemma 2's soft-caps,
Qwen3's head_dim, StableLM's partial rotary), so each model here is built with the shapes those defaults imply.
This file only writes files; it does not export them.
"""

from __future__ import annotations

from pathlib import Path

import tiny_families
from benchmarks import tiny_models as tm

COMMON = dict(tiny_families.COMMON, initializer_range=0.2)


def _model(arch: str):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        Phi3Config,
        Phi3ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
        StableLmConfig,
        StableLmForCausalLM,
    )

    if arch == "gemma2":
        return Gemma2ForCausalLM(Gemma2Config(**{**COMMON, "initializer_range": 0.02}, head_dim=16, sliding_window=4))
    if arch == "gemma3":  # 6 layers: five sliding ones and a global one, transformers' default pattern
        return Gemma3ForCausalLM(
            Gemma3TextConfig(
                **{**COMMON, "num_hidden_layers": 6, "initializer_range": 0.02}, head_dim=16, sliding_window=4
            )
        )
    if arch == "phi3":
        return Phi3ForCausalLM(Phi3Config(**COMMON))
    if arch == "qwen3":  # transformers reads no head_dim for qwen3 GGUF files: Qwen3Config's default, 128
        return Qwen3ForCausalLM(
            Qwen3Config(**{**COMMON, "num_attention_heads": 2, "num_key_value_heads": 1}, head_dim=128)
        )
    if arch == "stablelm":  # head size 64, a quarter rotating (the default factor, which the GGUF does not carry)
        return StableLmForCausalLM(
            StableLmConfig(
                **{**COMMON, "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 2}, use_qkv_bias=True
            )
        )
    raise ValueError(arch)


ARCHITECTURES = ("gemma2", "gemma3", "phi3", "qwen3", "stablelm")


def write_gguf(arch: str, path: Path, seed: int = 5) -> Path:
    """A tiny random model of llama.cpp architecture `arch`, as a float32 GGUF file at `path`."""
    import gguf
    import torch
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    torch.manual_seed(seed)
    model = _model(arch).eval()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                tensor.add_(torch.randn_like(tensor) * 0.2)
    config = model.config
    names = {hf: name for name, hf in get_gguf_hf_weights_map(model).items()}  # transformers name -> llama.cpp name
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    if arch == "stablelm":
        writer.add_layer_norm_eps(config.layer_norm_eps)
    else:
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(config.rope_theta)
    if arch.startswith("gemma"):
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_sliding_window(config.sliding_window)
    _tokenizer(writer, arch)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        array = tensor.float().numpy()
        if arch.startswith("gemma") and "norm.weight" in name:
            array = array + 1.0  # llama.cpp stores Gemma's norms as 1 + w
        writer.add_tensor(names[name], array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tokenizer(writer, arch: str) -> None:
    """The tiny byte-level BPE (tiny_models.build_tokenizer) as GGUF tokenizer keys."""
    import json

    import gguf

    tokenizer = json.loads(tm.build_tokenizer(add_bos=False).backend_tokenizer.to_str())
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    specials = {t["id"] for t in tokenizer["added_tokens"]}
    tokens = [token for token, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("llama" if arch.startswith("gemma") else "gpt2")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tm.BOS_ID)
    writer.add_eos_token_id(tm.EOS_ID)
    writer.add_pad_token_id(tm.PAD_ID)
    writer.add_unk_token_id(tm.PAD_ID)
