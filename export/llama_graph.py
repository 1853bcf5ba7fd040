"""Build a fused decoder graph for the Llama family (Llama, SmolLM2, Qwen2, Mistral) straight from the weights.

optimum's export traces PyTorch into thousands of small nodes; this writes the graph onnxruntime runs fastest
on a CPU, a handful of fused contrib operators per layer:

    SkipSimplifiedLayerNormalization -> MatMul (q|k|v fused) -> GroupQueryAttention (rotary inside, KV cache in
    one buffer shared by past and present) -> MatMul -> SkipSimplifiedLayerNormalization -> MatMul (gate|up
    fused) -> QuickGelu(alpha=1) = SiLU -> Mul -> MatMul

and computes the LM head only at one position per row (`last_index`), so a long prompt does not pay for
logits it never reads. The KV cache is a (batch, kv_heads, capacity, head_size) buffer per layer that the
runtime binds as both past and present; rows hold their tokens from position 0 (right padding), and
`seqlens_k` (tokens in the cache after this step, minus one) tells each row's length. Quantization happens
later on the MatMul nodes (`quantize.py`). This file does not run or validate the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError
from memgpt_runtime.manifest import GraphSpec, KVCacheSpec

from .architectures import ModelShape
from .graph_builder import MS_DOMAIN, GraphBuilder
from .onnx_graph import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, DecoderGraph

FUSED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def fused_graph_refusal(config: Any) -> str | None:
    """Why this config cannot take the fused graph (None if it can): the pipeline then uses optimum's export."""
    if config.model_type not in FUSED_MODEL_TYPES:
        return f"{config.model_type} has no fused graph"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act} is not SiLU"
    rope = getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) in ("dynamic", "longrope"):
        return "rotary scaling that depends on the sequence length"
    if getattr(config, "use_sliding_window", False):
        return "per-layer sliding windows"
    heads = config.num_attention_heads
    if (getattr(config, "head_dim", None) or config.hidden_size // heads) % 16:
        return "a head size that is not a multiple of 16 (GroupQueryAttention needs one)"
    if getattr(config, "mlp_bias", False) or getattr(config, "attention_bias", False) and config.model_type != "qwen2":
        return "biases this graph does not carry"
    return None


def build_llama_graph(model: Any, shape: ModelShape) -> tuple[Any, DecoderGraph]:
    """The fused fp32 graph of a loaded Llama-family model, and the names the runtime feeds it by."""
    config = model.config
    weights = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    heads, kv_heads, head_size = config.num_attention_heads, shape.num_kv_heads, shape.head_size
    eps = float(config.rms_norm_eps)
    g = GraphBuilder("memgpt-fused-decoder")

    ids = g.input("input_ids", np.int64, ["batch", "sequence"])
    seqlens = g.input("seqlens_k", np.int32, ["batch"])
    total = g.input("total_sequence_length", np.int32, [])
    last = g.input("last_index", np.int64, ["batch"])
    cos, sin = rotary_caches(model, shape.context_length)
    cos, sin = g.constant("rotary.cos", cos), g.constant("rotary.sin", sin)
    window = getattr(config, "sliding_window", None) if config.model_type == "mistral" else None

    embed = g.constant("embed_tokens.weight", weights["model.embed_tokens.weight"])  # (vocab, hidden)
    hidden = g.one("Gather", [embed, ids], name="embed")  # (batch, seq, hidden)
    residual, carry = hidden, None
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        x, residual = _norm(g, carry, residual, weights[p + "input_layernorm.weight"], eps, f"layers.{i}.input_norm")
        qkv_w = np.concatenate([weights[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])  # ((h + 2 kv) d, hidden)
        qkv = _linear(g, x, qkv_w, f"layers.{i}.qkv_proj")
        if p + "self_attn.q_proj.bias" in weights:  # Qwen2
            bias = np.concatenate([weights[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            qkv = g.one("Add", [qkv, g.constant(f"layers.{i}.qkv_proj.bias", bias)], name=f"layers.{i}.qkv_bias")
        past_k, past_v = g.input(PAST_KEY.format(i=i), np.float32, _cache_dims(kv_heads, head_size)), g.input(
            PAST_VALUE.format(i=i), np.float32, _cache_dims(kv_heads, head_size)
        )
        present = [PRESENT_KEY.format(i=i), PRESENT_VALUE.format(i=i)]
        attn = g.node(
            "GroupQueryAttention",
            [qkv, "", "", past_k, past_v, seqlens, total, cos, sin],
            [f"layers.{i}.attn/out", *present],
            name=f"layers.{i}.attn",
            domain=MS_DOMAIN,
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=float(head_size**-0.5),
            local_window_size=int(window) - 1 if window else -1,
        )[0]
        for name in present:
            g.output(name, np.float32, _cache_dims(kv_heads, head_size))
        out = _linear(g, attn, weights[p + "self_attn.o_proj.weight"], f"layers.{i}.o_proj")
        x, residual = _norm(g, out, residual, weights[p + "post_attention_layernorm.weight"], eps, f"layers.{i}.post_norm")
        gate_up = _linear(g, x, np.concatenate([weights[p + "mlp.gate_proj.weight"], weights[p + "mlp.up_proj.weight"]]),
                          f"layers.{i}.gate_up_proj")
        inter = weights[p + "mlp.up_proj.weight"].shape[0]
        split = g.constant(f"layers.{i}.gate_up_split", np.array([inter, inter], np.int64))
        gate, up = g.node("Split", [gate_up, split], 2, name=f"layers.{i}.gate_up_split", axis=-1)
        act = g.one("QuickGelu", [gate], name=f"layers.{i}.silu", domain=MS_DOMAIN, alpha=1.0)  # x * sigmoid(x)
        carry = _linear(g, g.one("Mul", [act, up], name=f"layers.{i}.gated"), weights[p + "mlp.down_proj.weight"],
                        f"layers.{i}.down_proj")

    # the head sees one position per row: the residual stream at `last_index`, then the final norm
    stream = g.one("Add", [carry, residual], name="final_residual")  # (batch, seq, hidden)
    index = g.one("Unsqueeze", [last, g.constant("axis_last", np.array([-1], np.int64))], name="last_index_2d")
    picked = g.one("GatherND", [stream, index], name="last_position", batch_dims=1)  # (batch, hidden)
    normed = g.one("SimplifiedLayerNormalization", [picked, g.constant("norm.weight", weights["model.norm.weight"])],
                   name="final_norm", axis=-1, epsilon=eps, stash_type=1)
    if config.tie_word_embeddings or "lm_head.weight" not in weights:
        g.node("Gemm", [normed, embed], ["logits"], name="lm_head", transB=1)  # shares the embedding table
    else:
        g.node("MatMul", [normed, g.constant("lm_head.weight_t", weights["lm_head.weight"].T)], ["logits"], name="lm_head")
    g.output("logits", np.float32, ["batch", shape.vocab_size])

    graph = GraphSpec(
        input_ids=ids, attention_mask=None, position_ids=None, logits="logits",
        seqlens_k=seqlens, total_sequence_length=total, last_index=last,
    )  # fmt: skip
    kv = KVCacheSpec("shared", shape.num_layers, kv_heads, head_size, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
    return g.model(), DecoderGraph(graph, kv, shape.vocab_size)


def rotary_caches(model: Any, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(context, head_size / 2) cos and sin tables, from the model's own rotary module (any static scaling)."""
    import torch

    rotary = model.model.rotary_emb
    positions = torch.arange(context_length, dtype=torch.int64)[None, :]
    probe = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos, sin = rotary(probe, positions)  # (1, context, head_size): two copies of each frequency
    half = cos.shape[-1] // 2
    if not torch.allclose(cos[0, :, :half], cos[0, :, half:]):
        raise ExportError("this model's rotary embedding is interleaved, which the fused graph does not support")
    return cos[0, :, :half].numpy().astype(np.float32), sin[0, :, :half].numpy().astype(np.float32)


def _norm(g: GraphBuilder, add: str | None, residual: str, weight: np.ndarray, eps: float, name: str) -> tuple[str, str]:
    """RMS norm of `residual + add` (just `residual` for the first layer); returns (normed, new residual)."""
    w = g.constant(f"{name}.weight", weight)
    if add is None:
        return g.one("SimplifiedLayerNormalization", [residual, w], name=name, axis=-1, epsilon=eps, stash_type=1), residual
    normed, summed = f"{name}/out", f"{name}/sum"
    g.node("SkipSimplifiedLayerNormalization", [add, residual, w], [normed, "", "", summed], name=name,
           domain=MS_DOMAIN, epsilon=eps)
    return normed, summed


def _linear(g: GraphBuilder, x: str, weight: np.ndarray, name: str) -> str:
    """x @ weight.T for a torch Linear weight (out, in): a MatMul on a (in, out) constant."""
    return g.one("MatMul", [x, g.constant(f"{name}.weight_t", np.ascontiguousarray(weight.T))], name=name)


def _cache_dims(kv_heads: int, head_size: int) -> list[Any]:
    return ["batch", kv_heads, "capacity", head_size]
