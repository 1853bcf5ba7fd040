"""PyTorch through transformers `generate` at fp32: the baseline every other engine is divided by.

Loads the Hugging Face folder the suite saved from the same weights (the GGUF dequantized to fp32), as a causal
LM, or as a sequence-to-sequence LM (`AutoModelForSeq2SeqLM`) when its config says `is_encoder_decoder`.
"""

from __future__ import annotations

from .hf_common import HFGenerateEngine


def import_modules() -> None:
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: F401


def load(spec: dict) -> HFGenerateEngine:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    seq2seq = AutoConfig.from_pretrained(spec["folder"]).is_encoder_decoder
    model_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = model_class.from_pretrained(spec["folder"], dtype=torch.float32).eval()
    return HFGenerateEngine(model, spec)
