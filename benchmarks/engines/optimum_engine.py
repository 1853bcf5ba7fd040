"""optimum's `ORTModelForCausalLM` on its own fp32 ONNX export of the same weights, through transformers `generate`."""

from __future__ import annotations

from .hf_common import HFGenerateEngine


def import_modules() -> None:
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    from optimum.onnxruntime import ORTModelForCausalLM  # noqa: F401


def load(spec: dict) -> HFGenerateEngine:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(spec["threads"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(
        spec["folder"], session_options=options, provider="CPUExecutionProvider", use_io_binding=False
    )
    return HFGenerateEngine(model, spec)
