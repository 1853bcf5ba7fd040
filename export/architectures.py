"""The registry of supported architectures: each entry turns a transformers config into the model's shape.

An entry knows where its config keeps the layer count, KV heads, head size and context length; everything
downstream (ONNX names, manifest) is shared. To add an architecture, add an entry and a tiny-model test.
It does not load models or check that optimum can export them (optimum's own registry decides that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from memgpt_runtime.errors import ExportError


@dataclass(frozen=True)
class ModelShape:
    """The numbers the runtime needs to size its KV cache and context."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    context_length: int
    vocab_size: int


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    shape: Callable[[Any], ModelShape]


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


ARCHITECTURES = (
    Architecture("llama", ("llama", "mistral", "qwen2"), _llama_shape),
    Architecture("gpt2", ("gpt2",), _gpt2_shape),
)


def supported_model_types() -> list[str]:
    return sorted(t for arch in ARCHITECTURES for t in arch.model_types)


def architecture_for(config: Any) -> Architecture:
    """The registry entry for `config.model_type`; ExportError listing every supported type if none."""
    model_type = getattr(config, "model_type", None)
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    raise ExportError(
        f"architecture {model_type!r} is not supported; supported model types: {', '.join(supported_model_types())}"
    )


def model_shape(config: Any) -> ModelShape:
    """Resolve the shape of a supported model from its config (raises ExportError if unsupported)."""
    return architecture_for(config).shape(config)
