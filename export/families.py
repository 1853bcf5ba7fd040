"""The decoder families the fused graph covers, each resolved from its transformers config into one DecoderRecipe.

A recipe is everything `fused_graph.py` needs to write a family's graph without knowing its name: where each
layer's norms sit (before and/or after attention and MLP, or one norm shared by parallel branches), which norm
(RMS, RMS of weight 1 + w, LayerNorm with bias), q/k norms (per head, over all heads, or one LayerNorm per
head), the activation, the attention scale and soft-capping, each layer's sliding window and rotary table, the
multipliers some families put on embeddings, residual branches and logits, and the names of the weights.
Each entry follows the family's modeling file in transformers 4.57 (cited per function). `recipe_refusal` says why
a config cannot take the fused graph (then optimum's traced graph is used). This file reads configs only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FUSED_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # tables that do not depend on the sequence length


@dataclass(frozen=True)
class Norms:
    """Per-layer norm weight names (relative to the layer prefix); None = the family has no such norm."""

    attn_in: str | None = "input_layernorm"
    attn_out: str | None = None
    mlp_in: str | None = "post_attention_layernorm"
    mlp_out: str | None = None


@dataclass(frozen=True)
class DecoderRecipe:
    """One family's fused decoder, resolved from a config (see the module docstring)."""

    family: str
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_size: int
    vocab_size: int
    context_length: int
    eps: float
    norms: Norms = field(default_factory=Norms)
    norm_kind: str = "rms"  # "rms" | "layer" (LayerNorm with bias)
    norm_offset: float = 0.0  # 1.0: the norms multiply by (1 + weight) (Gemma)
    parallel: bool = False  # attention and MLP read the same normed input; both add to the residual (StableLM)
    qk_norm: str | None = None  # None | "head" (RMS over head_size) | "all" (RMS over all heads) | "layer_per_head"
    activation: str = "silu"  # "silu" | "gelu_tanh" | "gelu"
    scale: float = 0.0  # attention scale; 0 = head_size ** -0.5
    softcap: float = 0.0  # attention logit soft-capping; 0 = off
    final_softcap: float = 0.0  # logit soft-capping; 0 = off
    embed_scale: float = 1.0
    residual_scale: float = 1.0  # on each branch before it joins the residual (Granite)
    logits_scale: float = 1.0  # logits are multiplied by it (Granite divides by logits_scaling)
    windows: tuple[int | None, ...] = ()  # per layer: sliding window in tokens (the query's own included), or None
    rotary: tuple[str, ...] = ()  # per layer: the name of its rotary table (keys of `rotary_configs`)
    rotary_configs: dict[str, Any] = field(default_factory=dict)  # table name -> the config its rotary module reads
    fused_qkv: str | None = None  # weight name of a fused q|k|v projection (Phi-3), else q_proj, k_proj, v_proj
    fused_gate_up: str | None = None  # weight name of a fused gate|up projection (Phi-3)
    tied: bool = False

    @property
    def attention_scale(self) -> float:
        return self.scale or self.head_size**-0.5


def recipe_refusal(config: Any) -> str | None:
    """Why this config cannot take the fused graph (None if it can)."""
    build = RECIPES.get(getattr(config, "model_type", None))
    if build is None:
        return f"{config.model_type} has no fused graph"
    try:
        recipe = build(config)
    except _Refused as exc:
        return str(exc)
    if recipe.head_size % 16:
        return "a head size that is not a multiple of 16 (GroupQueryAttention needs one)"
    for rotary in recipe.rotary_configs.values():
        rope = getattr(rotary, "rope_scaling", None) or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in STATIC_ROPE:
            return f"rotary scaling {kind!r}, which depends on the sequence length"
        dim = rotary_dim(rotary, recipe.head_size)
        if dim % 16 or dim > recipe.head_size:
            return f"a rotary dimension of {dim}, not a multiple of 16 (GroupQueryAttention needs one)"
    return None


def recipe_for(config: Any) -> DecoderRecipe:
    """The recipe of a config that `recipe_refusal` accepts."""
    return RECIPES[config.model_type](config)


def rotary_dim(config: Any, head_size: int) -> int:
    """How many of each head's dimensions rotate (partial_rotary_factor, as transformers' default rope init)."""
    return int(head_size * getattr(config, "partial_rotary_factor", 1.0))


class _Refused(Exception):
    pass


def _activation(name: str) -> str:
    if name not in FUSED_ACTIVATIONS:
        raise _Refused(f"activation {name} has no fused kernel")
    return FUSED_ACTIVATIONS[name]


def _base(config: Any, family: str, **overrides: Any) -> DecoderRecipe:
    """The Llama-shaped fields every family shares; `overrides` replace them."""
    heads = config.num_attention_heads
    layers = config.num_hidden_layers
    values = dict(
        family=family,
        num_layers=layers,
        hidden=config.hidden_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_size=getattr(config, "head_dim", None) or config.hidden_size // heads,
        vocab_size=config.vocab_size,
        context_length=config.max_position_embeddings,
        eps=float(getattr(config, "rms_norm_eps", 1e-6)),
        activation=_activation(getattr(config, "hidden_act", "silu")),
        windows=_windows(config),
        rotary=("default",) * layers,
        rotary_configs={"default": config},
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )
    values.update(overrides)
    return DecoderRecipe(**values)


def _windows(config: Any) -> tuple[int | None, ...]:
    """Per layer sliding window: `layer_types` where the config has them (Qwen2/3, Gemma 2/3), else one window for
    all layers where the family's attention reads `config.sliding_window` (Mistral, Phi-3)."""
    layers = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return tuple(window if kind == "sliding_attention" else None for kind in types)
    if config.model_type in ("mistral", "phi3") and window:
        return (window,) * layers
    return (None,) * layers


def _llama(config: Any) -> DecoderRecipe:
    # llama/modeling_llama.py, mistral/modeling_mistral.py, qwen2/modeling_qwen2.py: pre-norm, q|k|v biases
    # where the checkpoint has them (Qwen2, Llama's attention_bias), SiLU-gated MLP
    return _base(config, "llama")


def _qwen3(config: Any) -> DecoderRecipe:
    # qwen3/modeling_qwen3.py: Qwen3Attention applies an RMS norm over each head of q and k before rotary
    return _base(config, "qwen3", qk_norm="head")


def _phi3(config: Any) -> DecoderRecipe:
    # phi3/modeling_phi3.py: qkv_proj holds q|k|v; gate_up_proj holds gate|up; partial rotary per config
    return _base(config, "phi3", fused_qkv="self_attn.qkv_proj", fused_gate_up="mlp.gate_up_proj")


def _granite(config: Any) -> DecoderRecipe:
    # granite/modeling_granite.py: embeddings * embedding_multiplier, attention scale = attention_multiplier,
    # each branch * residual_multiplier, logits / logits_scaling
    return _base(
        config,
        "granite",
        scale=float(config.attention_multiplier),
        embed_scale=float(config.embedding_multiplier),
        residual_scale=float(config.residual_multiplier),
        logits_scale=1.0 / float(config.logits_scaling),
    )


def _olmo2(config: Any) -> DecoderRecipe:
    # olmo2/modeling_olmo2.py: norms after attention and MLP only; q and k normed over all heads at once
    return _base(
        config,
        "olmo2",
        norms=Norms(
            attn_in=None, attn_out="post_attention_layernorm", mlp_in=None, mlp_out="post_feedforward_layernorm"
        ),
        qk_norm="all",
    )


_SANDWICH = Norms(
    "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"
)


def _gemma(config: Any) -> DecoderRecipe:
    # gemma/modeling_gemma.py: RMS norms of weight (1 + w), embeddings * sqrt(hidden), tanh-GELU MLP
    return _base(
        config, "gemma", norm_offset=1.0, embed_scale=config.hidden_size**0.5, activation=_activation(config.hidden_act)
    )


def _gemma2(config: Any) -> DecoderRecipe:
    # gemma2/modeling_gemma2.py: norms before and after both branches, scale query_pre_attn_scalar ** -0.5,
    # attention and final logit soft-capping, sliding and global layers (layer_types)
    return _base(
        config,
        "gemma2",
        norms=_SANDWICH,
        norm_offset=1.0,
        embed_scale=config.hidden_size**0.5,
        activation=_activation(config.hidden_activation),
        scale=config.query_pre_attn_scalar**-0.5,
        softcap=float(config.attn_logit_softcapping or 0.0),
        final_softcap=float(config.final_logit_softcapping or 0.0),
    )


def _gemma3(config: Any) -> DecoderRecipe:
    # gemma3/modeling_gemma3.py (Gemma3ForCausalLM): as Gemma 2 plus q/k norms per head, and sliding layers rotate
    # with rope_local_base_freq and no scaling (Gemma3TextModel.rotary_emb_local); Gemma3Attention passes no
    # softcap to its attention function, so attn_logit_softcapping is not applied
    import copy

    if getattr(config, "use_bidirectional_attention", False):
        raise _Refused("bidirectional attention")
    local = copy.deepcopy(config)
    local.rope_theta = config.rope_local_base_freq
    local.rope_scaling = {"rope_type": "default"}
    rotary = tuple("local" if kind == "sliding_attention" else "global" for kind in config.layer_types)
    return _base(
        config,
        "gemma3",
        norms=_SANDWICH,
        norm_offset=1.0,
        embed_scale=config.hidden_size**0.5,
        activation=_activation(config.hidden_activation),
        scale=config.query_pre_attn_scalar**-0.5,
        final_softcap=float(config.final_logit_softcapping or 0.0),
        qk_norm="head",
        rotary=rotary,
        rotary_configs={"global": config, "local": local},
    )


def _stablelm(config: Any) -> DecoderRecipe:
    # stablelm/modeling_stablelm.py: LayerNorm with bias, partial rotary, optional q|k|v bias, optional LayerNorm
    # per head on q and k (each head its own weight), optional parallel residual (no post-attention norm)
    norms = Norms("input_layernorm", None, None if config.use_parallel_residual else "post_attention_layernorm", None)
    return _base(
        config,
        "stablelm",
        norms=norms,
        norm_kind="layer",
        eps=float(config.layer_norm_eps),
        parallel=bool(config.use_parallel_residual),
        qk_norm="layer_per_head" if config.qk_layernorm else None,
    )


RECIPES: dict[str, Callable[[Any], DecoderRecipe]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _llama,
    "qwen3": _qwen3,
    "phi3": _phi3,
    "granite": _granite,
    "olmo2": _olmo2,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3,
    "stablelm": _stablelm,
}
