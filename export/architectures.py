"""The registry of supported architectures: each entry turns a transformers config into the model's shape.

An entry knows where its config keeps the layer count, KV heads, head size and context length; everything
downstream (ONNX names, manifest) is shared. An encoder-decoder entry also says where each decoder layer keeps
its cross-attention key/value projections, which the encoder graph applies once per source
(`seq2seq_graph.py`). To add an architecture, add an entry and a tiny-model test.
It does not load models or check that optimum can export them (optimum's own registry decides that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memgpt_runtime.errors import ExportError


@dataclass(frozen=True)
class ModelShape:
    """The numbers the runtime needs to size its KV cache and context."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    context_length: int  # the longest (decoder) sequence
    vocab_size: int
    max_source_length: int | None = None  # encoder-decoder models: the longest source the encoder takes


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    shape: Callable[[Any], ModelShape]
    # encoder-decoder models only: the loaded model -> per decoder layer, its cross-attention (key, value)
    # projections as torch Linear modules (weight (heads * head_size, d_model), bias or None)
    cross_attention: Callable[[Any], list[tuple[Any, Any]]] | None = None

    @property
    def kind(self) -> str:
        return "decoder-only" if self.cross_attention is None else "encoder-decoder"


def _llama_shape(config: Any) -> ModelShape:
    # Llama, Mistral and Qwen2 name things alike; head_dim is explicit on some (e.g. Mistral-Nemo), else derived.
    heads = config.num_attention_heads
    return ModelShape(
        num_layers=config.num_hidden_layers,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_size=getattr(config, "head_dim", None) or config.hidden_size // heads,
        context_length=config.max_position_embeddings,
        vocab_size=config.vocab_size,
    )


def _gpt2_shape(config: Any) -> ModelShape:
    return ModelShape(
        num_layers=config.n_layer,
        num_kv_heads=config.n_head,  # no GQA: every head has its own keys and values
        head_size=config.n_embd // config.n_head,
        context_length=config.n_positions,
        vocab_size=config.vocab_size,
    )


T5_DEFAULT_LENGTH = 512  # T5 has relative positions, no table; 512 is what it was trained with


def _t5_shape(config: Any) -> ModelShape:
    # subtle: T5's head size is d_kv, which need not be d_model / num_heads
    length = getattr(config, "n_positions", None) or T5_DEFAULT_LENGTH
    return ModelShape(
        num_layers=config.num_decoder_layers,
        num_kv_heads=config.num_heads,
        head_size=config.d_kv,
        context_length=length,
        vocab_size=config.vocab_size,
        max_source_length=length,
    )


def _bart_shape(config: Any) -> ModelShape:
    # BART and Marian: learned (BART) or sinusoidal (Marian) position tables of max_position_embeddings rows
    heads = config.decoder_attention_heads
    return ModelShape(
        num_layers=config.decoder_layers,
        num_kv_heads=heads,
        head_size=config.d_model // heads,
        context_length=config.max_position_embeddings,
        vocab_size=getattr(config, "decoder_vocab_size", None) or config.vocab_size,
        max_source_length=config.max_position_embeddings,
    )


def _t5_cross(model: Any) -> list[tuple[Any, Any]]:
    # no bias, and no 1/sqrt(head_size) scaling anywhere in T5's attention
    return [(block.layer[1].EncDecAttention.k, block.layer[1].EncDecAttention.v) for block in model.decoder.block]


def _bart_cross(model: Any) -> list[tuple[Any, Any]]:
    # the scaling sits on the queries, so keys and values are the plain projections (with bias)
    return [(layer.encoder_attn.k_proj, layer.encoder_attn.v_proj) for layer in model.model.decoder.layers]


FUSED_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi3",
    "granite",
    "olmo2",
    "gemma",
    "gemma2",
    "gemma3_text",
    "stablelm",
)  # families.py's recipes: the fused graph (optimum's for a config it refuses)
ARCHITECTURES = (
    Architecture("fused", FUSED_TYPES, _llama_shape),
    Architecture("gpt2", ("gpt2",), _gpt2_shape),
    Architecture("t5", ("t5",), _t5_shape, _t5_cross),
    Architecture("bart", ("bart", "marian"), _bart_shape, _bart_cross),
)


def supported_model_types() -> list[str]:
    return sorted({t for arch in ARCHITECTURES for t in arch.model_types} | set(traced_model_types()))


def traced_model_types() -> list[str]:
    """Decoder-only model types optimum exports as "text-generation-with-past" (its registry, read lazily)."""
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  registers optimum's ONNX configs
        from optimum.exporters.tasks import TasksManager
    except ImportError:
        return []
    supported = TasksManager._LIBRARY_TO_SUPPORTED_MODEL_TYPES.get("transformers", {})
    listed = {t for arch in ARCHITECTURES for t in arch.model_types}
    return sorted(
        t
        for t, tasks in supported.items()
        if "text-generation-with-past" in tasks.get("onnx", {}) and t not in listed and t not in ENCODER_DECODER_TYPES
    )


ENCODER_DECODER_TYPES = ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "pegasus")
TRACED = Architecture("optimum", (), lambda config: _traced_shape(config))


def _traced_shape(config: Any) -> ModelShape:
    """A traced model's layers, context and vocabulary from the usual config names. Its KV heads and head size are
    left 0: optimum's graph says them (onnx_graph.read_decoder_graph), whatever each family's config calls them."""

    def first(*names: str) -> Any:
        return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), None)

    return ModelShape(
        num_layers=first("num_hidden_layers", "n_layer", "num_layers"),
        num_kv_heads=0,
        head_size=0,
        context_length=first("max_position_embeddings", "n_positions", "seq_length", "max_seq_len") or 2048,
        vocab_size=config.vocab_size,
    )


def architecture_for(config: Any) -> Architecture:
    """The registry entry for `config.model_type`; ExportError listing every supported type if none."""
    return architecture_for_type(getattr(config, "model_type", None))


def architecture_for_type(model_type: str | None) -> Architecture:
    """The registry entry for a model type; ExportError naming the supported families (not transformers') if none."""
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    if model_type in traced_model_types():
        return TRACED
    raise ExportError(
        f"architecture {model_type!r} is not supported; supported model types: {', '.join(supported_model_types())}"
    )


def model_shape(config: Any) -> ModelShape:
    """Resolve the shape of a supported model from its config (raises ExportError if unsupported)."""
    return architecture_for(config).shape(config)
