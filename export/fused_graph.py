"""Build the fused decoder graph of any family in `families.py` from its weights, one layer at a time.

optimum's export traces PyTorch into thousands of small nodes; this writes the graph onnxruntime runs fastest on
a CPU, a handful of fused contrib operators per layer:

    [norm] -> MatMul (q|k|v fused) -> [q/k norms] -> GroupQueryAttention (rotary inside, sliding window,
    soft-capping, KV cache in one buffer shared by past and present) -> MatMul -> [norm] -> [norm] ->
    MatMul (gate|up fused) -> activation -> Mul -> MatMul -> [norm]

with the norms of each family where its recipe puts them (fused with the residual add where one follows it), and
computes the LM head only at one position per row (`last_index`). With `rows`, the residual stream is kept as
(batch * sequence, hidden) rows, viewed as (batch, sequence, hidden) only where an operator needs it
(GroupQueryAttention's input, the last-position gather): `--quantize gguf` builds it so, as its minimum terms are
then one Gemm each (docs/gguf.md). The KV cache is a (batch, kv_heads, capacity,
head_size) buffer per layer that the runtime binds as both past and present; rows hold their tokens from position
0 (right padding) and `seqlens_k` (tokens in the cache after this step, minus one) tells each row's length, so
rotary positions and windows count real tokens only.
Weights come from a `Weights` reader and go through a `precision` writer: `FloatPrecision` here (fp32 MatMuls),
or the quantizing one of `stream_quantize.py`, so a layer's weights are read, written and dropped before the
next. `linear_inputs` names each weight's input tensor, which calibration measures. This file does not run,
validate or quantize the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memgpt_runtime.manifest import GraphSpec, KVCacheSpec

from .families import DecoderRecipe, rotary_dim
from .graph_builder import MS_DOMAIN, GraphBuilder
from .graph_spec import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, DecoderGraph
from .weights import Weights

ACTIVATIONS = {"silu": ("QuickGelu", {"alpha": 1.0}), "gelu_tanh": ("FastGelu", {}), "gelu": ("Gelu", {})}


class FloatPrecision:
    """fp32 weights: MatMul on a (K, N) constant; the tied head shares the embedding table."""

    share_tied_head = True
    calibrated: set[str] = set()

    def linear(self, g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        """x @ weight.T (+ bias) for a torch Linear weight (out, in)."""
        out = g.one("MatMul", [x, g.constant(f"{name}.weight_t", np.ascontiguousarray(weight.T))], name=name)
        return out if bias is None else g.one("Add", [out, g.constant(f"{name}.bias", bias)], name=f"{name}.bias_add")

    def embedding(self, g: GraphBuilder, ids: str, table: np.ndarray) -> str:
        self.table = g.constant("embed_tokens.weight", table)  # (vocab, hidden)
        return g.one("Gather", [self.table, ids], name="embed")


class FusedDecoder:
    """Writes one family's fused graph into `g`: the embeddings, then layers in order, then the head."""

    def __init__(
        self, recipe: DecoderRecipe, weights: Weights, g: GraphBuilder, precision: Any = None, rows: bool = False
    ):
        self.recipe, self.weights, self.g = recipe, weights, g
        self.precision = precision or FloatPrecision()
        self.rows = rows  # the stream as (batch * sequence, hidden) rows, not (batch, sequence, hidden)
        self._shape3d = ""  # [batch, sequence, -1], for the 3-D views of a stream of rows
        self.linear_inputs: dict[str, str] = {}  # node name -> the tensor it multiplies (calibration reads them)
        self.carry: str | None = None  # the last branch's output, not yet added to the residual
        self.residual = ""
        self.layers = 0
        self._tables: dict[str, tuple[str, str]] = {}
        self.seqlens = g.input("seqlens_k", np.int32, ["batch"])
        self.total = g.input("total_sequence_length", np.int32, [])

    # inputs and outputs

    def embed(self) -> str:
        """input_ids -> the scaled embeddings (the residual stream); returns the input's name."""
        g = self.g
        ids = g.input("input_ids", np.int64, ["batch", "sequence"])
        flat = ids
        if self.rows:
            minus_one = g.constant("rows.minus_one", np.array([-1], np.int64))
            shape = g.one("Shape", [ids], name="rows.batch_sequence")
            self._shape3d = g.one("Concat", [shape, minus_one], name="rows.shape3d", axis=0)
            flat = g.one("Reshape", [ids, minus_one], name="rows.ids")  # (batch * sequence,)
        hidden = self.precision.embedding(g, flat, self.weights.get("model.embed_tokens.weight"))
        if self.recipe.embed_scale != 1.0:
            scale = self.g.constant("embed_scale", np.array(self.recipe.embed_scale, np.float32))
            hidden = self.g.one("Mul", [hidden, scale], name="embed_scaled")
        self.residual, self.carry = hidden, None
        return ids

    def head(self) -> tuple[str, str]:
        """Final norm and LM head at `last_index` only; returns (last_index input, logits output)."""
        g, r = self.g, self.recipe
        last = g.input("last_index", np.int64, ["batch"])
        index = g.one("Unsqueeze", [last, g.constant("axis_last", np.array([-1], np.int64))], name="last_index_2d")
        stream = self._view3d(self._stream(), "last_position")
        picked = g.one("GatherND", [stream, index], name="last_position", batch_dims=1)  # (batch, hidden)
        normed = self._final_norm(picked)
        self.linear_inputs["lm_head"] = normed
        logits = "logits" if not r.final_softcap else "logits_uncapped"
        if r.tied and self.precision.share_tied_head:
            g.node("Gemm", [normed, self.precision.table], [logits], name="lm_head", transB=1)
        else:
            name = "lm_head.weight" if self.weights.has("lm_head.weight") else "model.embed_tokens.weight"
            out = self.precision.linear(g, normed, "lm_head", self.weights.get(name), None)
            g.node("Identity", [out], [logits], name="lm_head_out")
        if r.final_softcap:  # tanh(logits / cap) * cap, as transformers' final_logit_softcapping
            cap = g.constant("final_softcap", np.array(r.final_softcap, np.float32))
            capped = g.one("Tanh", [g.one("Div", [logits, cap], name="softcap_div")], name="softcap_tanh")
            g.node("Mul", [capped, cap], ["logits"], name="softcap_mul")
        g.output("logits", np.float32, ["batch", r.vocab_size])
        return last, "logits"

    def decoder_graph(self, ids: str, last: str) -> DecoderGraph:
        graph = GraphSpec(
            input_ids=ids,
            attention_mask=None,
            position_ids=None,
            logits="logits",
            seqlens_k=self.seqlens,
            total_sequence_length=self.total,
            last_index=last,
        )
        r = self.recipe
        kv = KVCacheSpec(
            "shared", self.layers, r.kv_heads, r.head_size, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE
        )
        return DecoderGraph(graph, kv, r.vocab_size)

    # one decoder layer

    def layer(self, source: int) -> None:
        """Append layer `source` of the checkpoint as the graph's next layer."""
        g, r = self.g, self.recipe
        i, p = self.layers, f"model.layers.{source}."
        n = f"layers.{i}."
        x = self._branch_input(r.norms.attn_in, p, n + "input_norm")
        qkv = self.precision.linear(g, x, n + "qkv_proj", *self._qkv_weights(p))
        self.linear_inputs[n + "qkv_proj"] = x
        qkv = self._view3d(qkv, n + "qkv")  # (batch, sequence, q + 2 kv), as GroupQueryAttention takes it
        q_size, kv_size = r.heads * r.head_size, r.kv_heads * r.head_size
        if r.qk_norm:
            split = g.constant(n + "qkv_split", np.array([q_size, kv_size, kv_size], np.int64))
            q, k, v = g.node("Split", [qkv, split], 3, name=n + "qkv_split", axis=-1)
            qkv_inputs = [self._qk_norm(q, p, "q", r.heads, n), self._qk_norm(k, p, "k", r.kv_heads, n), v]
        else:
            qkv_inputs = [qkv, "", ""]
        past = [g.input(name.format(i=i), np.float32, _cache_dims(r)) for name in (PAST_KEY, PAST_VALUE)]
        present = [PRESENT_KEY.format(i=i), PRESENT_VALUE.format(i=i)]
        cos, sin = self._rotary(r.rotary[source])
        window = r.windows[source]
        attn = g.node(
            "GroupQueryAttention",
            [*qkv_inputs, *past, self.seqlens, self.total, cos, sin],
            [n + "attn/out", *present],
            name=n + "attn",
            domain=MS_DOMAIN,
            num_heads=r.heads,
            kv_num_heads=r.kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=float(r.attention_scale),
            softcap=float(r.softcap),
            local_window_size=int(window) if window else -1,
        )[0]
        for name in present:
            g.output(name, np.float32, _cache_dims(r))
        if self.rows:
            attn = g.one("Flatten", [attn], name=n + "attn_rows", axis=2)  # (batch * sequence, hidden)
        out = self.precision.linear(g, attn, n + "o_proj", *self._scaled(p + "self_attn.o_proj"))
        self.linear_inputs[n + "o_proj"] = attn
        if r.norms.attn_out:
            out = self._plain_norm(out, p + r.norms.attn_out, n + "attn_out_norm")
        if r.parallel:  # StableLM: the MLP reads the attention's input, both branches join the residual
            self.carry = g.one("Add", [out, self._mlp(x, p, n)], name=n + "parallel_sum")
        else:
            self.carry = out
            x = self._branch_input(r.norms.mlp_in, p, n + "post_norm")
            self.carry = self._mlp(x, p, n)
        if r.norms.mlp_out:
            self.carry = self._plain_norm(self.carry, p + r.norms.mlp_out, n + "mlp_out_norm")
        self.layers += 1

    def _mlp(self, x: str, p: str, n: str) -> str:
        g, r, w = self.g, self.recipe, self.weights
        if r.fused_gate_up:
            gate_up_w, gate_up_b = w.get(p + r.fused_gate_up + ".weight"), self._bias(p + r.fused_gate_up)
        else:
            gate_up_w = np.concatenate([w.get(p + "mlp.gate_proj.weight"), w.get(p + "mlp.up_proj.weight")])
            biases = [self._bias(p + "mlp.gate_proj"), self._bias(p + "mlp.up_proj")]
            gate_up_b = None if biases[0] is None else np.concatenate(biases)
        inter = gate_up_w.shape[0] // 2
        gate_up = self.precision.linear(g, x, n + "gate_up_proj", gate_up_w, gate_up_b)
        self.linear_inputs[n + "gate_up_proj"] = x
        del gate_up_w
        split = g.constant(n + "gate_up_split", np.array([inter, inter], np.int64))
        gate, up = g.node("Split", [gate_up, split], 2, name=n + "gate_up_split", axis=-1)
        op, attrs = ACTIVATIONS[r.activation]
        act = g.one(op, [gate], name=n + "act", domain=MS_DOMAIN, **attrs)
        gated = g.one("Mul", [act, up], name=n + "gated")
        self.linear_inputs[n + "down_proj"] = gated
        return self.precision.linear(g, gated, n + "down_proj", *self._scaled(p + "mlp.down_proj"))

    # weights

    def _qkv_weights(self, p: str) -> tuple[np.ndarray, np.ndarray | None]:
        r, w = self.recipe, self.weights
        if r.fused_qkv:
            return w.get(p + r.fused_qkv + ".weight"), self._bias(p + r.fused_qkv)
        weight = np.concatenate([w.get(p + f"self_attn.{k}_proj.weight") for k in "qkv"])  # ((h + 2 kv) d, hidden)
        biases = [self._bias(p + f"self_attn.{k}_proj") for k in "qkv"]
        if all(b is None for b in biases):
            return weight, None
        sizes = (r.heads * r.head_size, r.kv_heads * r.head_size, r.kv_heads * r.head_size)
        return weight, np.concatenate([np.zeros(s, np.float32) if b is None else b for b, s in zip(biases, sizes)])

    def _bias(self, module: str) -> np.ndarray | None:
        return self.weights.get(module + ".bias") if self.weights.has(module + ".bias") else None

    def _scaled(self, module: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A branch's last projection with the family's residual multiplier folded in (Granite)."""
        weight, bias = self.weights.get(module + ".weight"), self._bias(module)
        scale = self.recipe.residual_scale
        if scale == 1.0:
            return weight, bias
        return weight * np.float32(scale), None if bias is None else bias * np.float32(scale)

    # norms

    def _norm_weights(self, module: str) -> tuple[np.ndarray, np.ndarray | None]:
        weight = self.weights.get(module + ".weight") + np.float32(self.recipe.norm_offset)
        return weight, self._bias(module) if self.recipe.norm_kind == "layer" else None

    def _stream(self) -> str:
        """The residual stream as one tensor (adds the pending branch)."""
        if self.carry is not None:
            self.residual = self.g.one(
                "Add", [self.carry, self.residual], name=f"residual_{self.layers}_{len(self.g.nodes)}"
            )
            self.carry = None
        return self.residual

    def _view3d(self, x: str, name: str) -> str:
        """x as (batch, sequence, width): a view of a stream of rows, or x itself."""
        if not self.rows:
            return x
        return self.g.one("Reshape", [x, self._shape3d], name=f"{name}.view3d")

    def _branch_input(self, norm: str | None, p: str, name: str) -> str:
        """The input of a branch: the norm of `carry + residual` (one fused node), or the stream itself."""
        if norm is None:
            return self._stream()
        weight, bias = self._norm_weights(p + norm)
        if self.carry is None:
            return self._norm_node(self.residual, weight, bias, name)
        g, eps = self.g, self.recipe.eps
        w = g.constant(f"{name}.weight", weight)
        normed, summed = f"{name}/out", f"{name}/sum"
        if self.recipe.norm_kind == "layer":
            b = g.constant(f"{name}.bias", bias if bias is not None else np.zeros_like(weight))
            g.node(
                "SkipLayerNormalization",
                [self.carry, self.residual, w, b],
                [normed, "", "", summed],
                name=name,
                domain=MS_DOMAIN,
                epsilon=eps,
            )
        else:
            g.node(
                "SkipSimplifiedLayerNormalization",
                [self.carry, self.residual, w],
                [normed, "", "", summed],
                name=name,
                domain=MS_DOMAIN,
                epsilon=eps,
            )
        self.carry, self.residual = None, summed
        return normed

    def _plain_norm(self, x: str, module: str, name: str) -> str:
        return self._norm_node(x, *self._norm_weights(module), name)

    def _final_norm(self, x: str) -> str:
        weight, bias = self._norm_weights("model.norm")
        scale = np.float32(self.recipe.logits_scale)  # Granite's 1 / logits_scaling, folded into the last norm
        return self._norm_node(x, weight * scale, None if bias is None else bias * scale, "final_norm")

    def _norm_node(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        g, eps = self.g, self.recipe.eps
        w = g.constant(f"{name}.weight", weight)
        if self.recipe.norm_kind == "layer":
            b = g.constant(f"{name}.bias", bias if bias is not None else np.zeros_like(weight))
            return g.one("LayerNormalization", [x, w, b], name=name, axis=-1, epsilon=eps)
        return g.one("SimplifiedLayerNormalization", [x, w], name=name, axis=-1, epsilon=eps, stash_type=1)

    def _qk_norm(self, x: str, p: str, which: str, heads: int, n: str) -> str:
        """Norm q or k (batch, seq, heads * head_size) as the family does, before rotary."""
        g, r, eps = self.g, self.recipe, self.recipe.eps
        name = f"{n}{which}_norm"
        if r.qk_norm == "all":  # OLMo 2: one RMS norm over every head at once
            return self._norm_node(x, *self._norm_weights(f"{p}self_attn.{which}_norm"), name)
        heads_shape = g.constant(f"{name}.heads_shape", np.array([0, 0, heads, r.head_size], np.int64))
        flat_shape = g.constant(f"{name}.flat_shape", np.array([0, 0, heads * r.head_size], np.int64))
        per_head = g.one("Reshape", [x, heads_shape], name=f"{name}.split_heads")  # (batch, seq, heads, head_size)
        if r.qk_norm == "head":  # Qwen3, Gemma 3: one RMS weight shared by the heads
            normed = self._norm_node(per_head, *self._norm_weights(f"{p}self_attn.{which}_norm"), name)
        else:  # StableLM: a LayerNorm per head, each with its own weight (and no bias)
            ones = np.ones(r.head_size, np.float32)
            plain = g.one(
                "LayerNormalization",
                [per_head, g.constant(f"{name}.ones", ones), g.constant(f"{name}.zeros", np.zeros_like(ones))],
                name=name,
                axis=-1,
                epsilon=eps,
            )
            module = f"{p}self_attn.{which}_layernorm.norms"
            weight = np.stack([self.weights.get(f"{module}.{h}.weight") for h in range(heads)])  # (heads, head_size)
            normed = g.one("Mul", [plain, g.constant(f"{name}.weight", weight)], name=f"{name}.scale")
        return g.one("Reshape", [normed, flat_shape], name=f"{name}.merge_heads")

    def _rotary(self, table: str) -> tuple[str, str]:
        if table not in self._tables:
            cos, sin = rotary_tables(
                self.recipe.rotary_configs[table], self.recipe.head_size, self.recipe.context_length
            )
            suffix = "" if table == "default" else f".{table}"
            self._tables[table] = (
                self.g.constant(f"rotary.cos{suffix}", cos),
                self.g.constant(f"rotary.sin{suffix}", sin),
            )
        return self._tables[table]


def rotary_tables(config: Any, head_size: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, rotary_dim / 2) cos and sin tables, computed as the family's rotary module computes them.

    (transformers' `*RotaryEmbedding.forward`: inv_freq from ROPE_INIT_FUNCTIONS, float32 products with the
    positions, cos and sin times attention_scaling; its two copies of each frequency are one column here.)
    """
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = getattr(config, "rope_scaling", None) or {}
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope.get("rope_type", rope.get("type", "default"))](config, "cpu")
    half = rotary_dim(config, head_size) // 2
    if inv_freq.shape[0] != half:
        raise ValueError(f"rotary init gave {inv_freq.shape[0]} frequencies, expected {half}")
    position = torch.arange(positions, dtype=torch.int64)[None, None, :].float()
    with torch.no_grad():
        freqs = (inv_freq[None, :, None].float() @ position).transpose(1, 2)[0]  # (positions, half)
        cos, sin = freqs.cos() * scaling, freqs.sin() * scaling
    return cos.numpy().astype(np.float32), sin.numpy().astype(np.float32)


def build_fused_graph(
    recipe: DecoderRecipe, weights: Weights, g: GraphBuilder | None = None, precision: Any = None, rows: bool = False
) -> tuple[Any, DecoderGraph]:
    """The whole fused graph (embeddings, every layer, last-position head); the proto and its runtime names."""
    g = g or GraphBuilder("memgpt-fused-decoder")
    decoder = FusedDecoder(recipe, weights, g, precision, rows)
    ids = decoder.embed()
    for layer in range(recipe.num_layers):
        decoder.layer(layer)
    last, _ = decoder.head()
    return g.model(), decoder.decoder_graph(ids, last)


def _cache_dims(recipe: DecoderRecipe) -> list[Any]:
    return ["batch", recipe.kv_heads, "capacity", recipe.head_size]
