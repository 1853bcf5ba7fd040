"""PyTorch through transformers `generate` at fp32: the baseline every other engine is divided by.

Loads the Hugging Face folder the suite saved from the same weights (the GGUF dequantized to fp32).
"""

from __future__ import annotations

from .hf_common import HFGenerateEngine


def import_modules() -> None:
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM  # noqa: F401


def load(spec: dict) -> "HFGenerateEngine":
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    model = AutoModelForCausalLM.from_pretrained(spec["folder"], dtype=torch.float32).eval()
    return HFGenerateEngine(model, spec)

