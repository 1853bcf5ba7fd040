"""Small GGUF files written in the tests: a tiny random Llama whose tensors are quantized into any mix of GGUF types.

`build_wide_llama` saves a tiny Llama whose rows are 256 or 512 weights long, so that the K-quants (super-blocks
of 256) apply to every weight; `write_gguf` writes its tensors as llama.cpp's converter does (q and k rows
permuted for its rotary layout, the tokenizer as a "gpt2" BPE vocabulary) with gguf's writer, each tensor in
the type `types` names for it. Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 come from gguf's own quantizer; gguf has none for the
K-quants, so Q4_K and Q6_K are rounded here (`quantize_q4_k`, `quantize_q6_k`: plain round-to-nearest, packed
in ggml's layouts; tests check them against gguf's dequantizer). Nothing here touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import tiny_models

Types = Callable[[str, int | None], str]  # (GGUF role such as "attn_v", layer or None) -> GGUF type name


def build_wide_llama(folder: Path, seed: int = 3) -> Path:
    """Llama with GQA (4 heads of 64, 2 KV heads), hidden 256, MLP 512, 2 layers, tied head; EOS ids [1, 3]."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tiny_models.VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=tiny_models.BOS_ID,
        eos_token_id=tiny_models.EOS_ID,
        pad_token_id=tiny_models.PAD_ID,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so that rounding shows in the logits
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.08)
    gen = GenerationConfig(
        bos_token_id=tiny_models.BOS_ID,
        eos_token_id=[tiny_models.EOS_ID, tiny_models.IM_END_ID],
        pad_token_id=tiny_models.PAD_ID,
        max_new_tokens=16,
    )
    return tiny_models._save(model, tiny_models.build_tokenizer(add_bos=True), gen, folder)


def write_gguf(hf_folder: Path, path: Path, types: Types) -> Path:
    """Write the model in `hf_folder` as a llama GGUF at `path`, each 2-D tensor in `types(role, layer)`."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(hf_folder)
    state = {
        k: v.float().numpy()
        for k, v in AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).state_dict().items()
    }
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(float(config.rope_theta))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_rope_dimension_count(config.hidden_size // heads)
    w.add_vocab_size(config.vocab_size)
    _tokenizer(w, hf_folder)

    def put(name: str, role: str, layer: int | None, values: np.ndarray) -> None:
        kind = types(role, layer) if values.ndim == 2 else "F32"
        if kind == "F32":
            w.add_tensor(name, values.astype(np.float32))
        elif kind == "F16":
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, quantize(values, kind), raw_dtype=gguf.GGMLQuantizationType[kind])

    put("token_embd.weight", "token_embd", None, state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", "norm", i, state[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", "attn_q", i, _permute(state[p + "self_attn.q_proj.weight"], heads))
        put(f"blk.{i}.attn_k.weight", "attn_k", i, _permute(state[p + "self_attn.k_proj.weight"], kv_heads))
        put(f"blk.{i}.attn_v.weight", "attn_v", i, state[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", "attn_output", i, state[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", "norm", i, state[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", "ffn_gate", i, state[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", "ffn_up", i, state[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", "ffn_down", i, state[p + "mlp.down_proj.weight"])
    put("output_norm.weight", "norm", None, state["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for q/k rows (convert_hf_to_gguf.py `permute`); transformers undoes it on load."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, weight.shape[1]).swapaxes(1, 2).reshape(weight.shape)


def _tokenizer(w, hf_folder: Path) -> None:
    body = json.loads((Path(hf_folder) / "tokenizer.json").read_text())
    vocab = body["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in body["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in body["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tiny_models.BOS_ID)
    w.add_eos_token_id(tiny_models.EOS_ID)
    w.add_pad_token_id(tiny_models.PAD_ID)


def quantize(values: np.ndarray, kind: str) -> np.ndarray:
    """(rows, K) float32 -> (rows, bytes) uint8 in GGUF type `kind`."""
    import gguf

    if kind == "Q4_K":
        return quantize_q4_k(values)
    if kind == "Q6_K":
        return quantize_q6_k(values)
    return gguf.quants.quantize(values.astype(np.float32), gguf.GGMLQuantizationType[kind])


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """Q4_K: super-blocks of 8 x 32 weights, w = d*sc*q - dmin*m, 6-bit sc and m, 4-bit q (ggml's block_q4_K)."""
    rows = values.shape[0]
    x = values.astype(np.float32).reshape(-1, 8, 32)  # (super-blocks, sub-blocks, 32)
    low = np.minimum(x.min(axis=2), 0)
    scale, minimum = (x.max(axis=2) - low) / 15, -low  # (sb, 8), minimum >= 0
    d, dmin = _f16(scale.max(axis=1, keepdims=True) / 63), _f16(minimum.max(axis=1, keepdims=True) / 63)
    sc = np.clip(np.round(scale / np.where(d == 0, 1, d).astype(np.float32)), 0, 63).astype(np.uint8)
    m = np.clip(np.round(minimum / np.where(dmin == 0, 1, dmin).astype(np.float32)), 0, 63).astype(np.uint8)
    step = d.astype(np.float32) * sc
    q = np.clip(
        np.round((x + (dmin.astype(np.float32) * m)[..., None]) / np.where(step == 0, 1, step)[..., None]), 0, 15
    )
    q = q.astype(np.uint8)
    scales = np.concatenate(
        [
            (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6),
            (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6),
            (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4),
        ],
        axis=1,
    )
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)  # chunk i: sub-block 2i low nibbles, 2i+1 high
    blocks = np.concatenate([d.view(np.uint8), dmin.view(np.uint8), scales, qs], axis=1)  # (sb, 144)
    return blocks.reshape(rows, -1)


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """Q6_K: super-blocks of 16 x 16 weights, w = d*sc*(q - 32), int8 sc, 6-bit q (ggml's block_q6_K)."""
    rows = values.shape[0]
    x = values.astype(np.float32).reshape(-1, 16, 16)
    scale = np.abs(x).max(axis=2) / 31  # (sb, 16)
    d = _f16(scale.max(axis=1, keepdims=True) / 127)
    sc = np.clip(np.round(scale / np.where(d == 0, 1, d).astype(np.float32)), 0, 127).astype(np.int8)
    step = d.astype(np.float32) * sc
    codes = (np.clip(np.round(x / np.where(step == 0, 1, step)[..., None]), -32, 31) + 32).astype(np.uint8)
    codes = codes.reshape(-1, 256)
    low = (codes & 15).reshape(-1, 2, 2, 64)
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    high = (codes >> 4).reshape(-1, 2, 4, 32)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(-1, 64)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8)], axis=1)  # (sb, 210)
    return blocks.reshape(rows, -1)
