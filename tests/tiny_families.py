"""Tiny random models of the families the fused graph covers beyond Llama and Qwen2, saved as HF folders.

Each builder sets the options that make its family differ (sliding windows of a few tokens, soft-caps small
enough to bite, partial rotary, multipliers far from 1, random norm weights and biases) so that parity tests
exercise them, and shares the Llama tokenizer and generation config of `benchmarks/tiny_models.py`. Models are 2-4
layers, hidden 64-128. This file only builds models; it does not export them.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import tiny_models as tm

COMMON = dict(
    vocab_size=tm.VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=tm.BOS_ID,
    eos_token_id=tm.EOS_ID,
    pad_token_id=tm.PAD_ID,
)
WINDOW = 5  # tokens a sliding layer sees: less than the prompts plus generated tokens of the parity tests


def _randomize(model, std: float = 0.2) -> None:
    """Norm weights and biases start at constants; give them values so the tests see them."""
    import torch

    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                tensor.add_(torch.randn_like(tensor) * std)


def _save(model, folder: Path) -> Path:
    from transformers import GenerationConfig

    _randomize(model)
    gen = GenerationConfig(bos_token_id=tm.BOS_ID, eos_token_id=[tm.EOS_ID, tm.IM_END_ID], pad_token_id=tm.PAD_ID)
    return tm._save(model.eval(), tm.build_tokenizer(add_bos=True), gen, folder)


# weight init std per family: what makes the untrained model write varied tokens (not its last prompt token forever)
INIT = {
    "gemma": 0.3,
    "phi3": 0.2,
    "qwen3": 0.2,
    "olmo2": 0.2,
    "granite": 0.3,
    "stablelm": 0.2,
    "mistral": 0.2,
    "qwen2_sliding": 0.2,
}


def build(family: str, folder: Path, seed: int = 11) -> Path:
    """Build the tiny model `family` (a key of FAMILIES) into `folder`."""
    import torch

    torch.manual_seed(seed)
    return _save(FAMILIES[family](), folder)


def _common(family: str, **changes) -> dict:
    return {**COMMON, "initializer_range": INIT.get(family, 0.02), **changes}


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        **_common("gemma2", num_hidden_layers=4),
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=WINDOW,
        attn_logit_softcapping=1.5,
        final_logit_softcapping=2.0,
    )
    return Gemma2ForCausalLM(config)


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        **_common("gemma3", num_hidden_layers=4),
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"] * 2,
        rope_theta=1000.0,
        rope_local_base_freq=50.0,
        final_logit_softcapping=2.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )
    return Gemma3ForCausalLM(config)


def _gemma():
    from transformers import GemmaConfig, GemmaForCausalLM

    return GemmaForCausalLM(GemmaConfig(**_common("gemma"), head_dim=16))


def _phi3():
    from transformers import Phi3Config, Phi3ForCausalLM

    # head size 32 with half of it rotating (partial_rotary_factor, as Phi-4-mini), a sliding window on all layers
    config = Phi3Config(**_common("phi3", hidden_size=128), partial_rotary_factor=0.5, sliding_window=WINDOW)
    return Phi3ForCausalLM(config)


def _qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(**_common("qwen3"), head_dim=16, tie_word_embeddings=True))


def _olmo2():
    from transformers import Olmo2Config, Olmo2ForCausalLM

    return Olmo2ForCausalLM(Olmo2Config(**_common("olmo2")))


def _granite():
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(
        **_common("granite"),
        embedding_multiplier=2.0,
        attention_multiplier=0.15,
        residual_multiplier=0.5,
        logits_scaling=3.0,
        tie_word_embeddings=True,
    )
    return GraniteForCausalLM(config)


def _stablelm():
    from transformers import StableLmConfig, StableLmForCausalLM

    # stablelm-2-1_6b: LayerNorm, a quarter of each 64-wide head rotating, q|k|v biases
    config = StableLmConfig(
        **_common("stablelm", hidden_size=128, num_attention_heads=2, num_key_value_heads=2),
        partial_rotary_factor=0.25,
        use_qkv_bias=True,
    )
    return StableLmForCausalLM(config)


def _stablelm_parallel():
    import torch
    from transformers import StableLmConfig, StableLmForCausalLM

    # stablelm-2-12b: parallel residual, a LayerNorm per head on q and k
    from transformers.modeling_utils import no_init_weights

    config = StableLmConfig(
        **_common("stablelm", hidden_size=128), partial_rotary_factor=0.5, use_parallel_residual=True, qk_layernorm=True
    )
    with no_init_weights():  # subtle: transformers 4.57's _init_weights fails on the bias-free per-head LayerNorms
        model = StableLmForCausalLM(config)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "norm" in name:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                tensor.normal_(0, 0.2)
    return model


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**_common("mistral"), sliding_window=WINDOW))


def _qwen2_sliding():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # the last layer slides (use_sliding_window, max_window_layers), as Qwen2 checkpoints may
    config = Qwen2Config(
        **_common("qwen2_sliding"), use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1
    )
    return Qwen2ForCausalLM(config)


FAMILIES = {
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "phi3": _phi3,
    "qwen3": _qwen3,
    "olmo2": _olmo2,
    "granite": _granite,
    "stablelm": _stablelm,
    "stablelm_parallel": _stablelm_parallel,
    "mistral": _mistral,
    "qwen2_sliding": _qwen2_sliding,
}
