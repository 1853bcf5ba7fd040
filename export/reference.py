"""Decide what a streamed export is validated against, and build those PyTorch references.

Every export is checked against PyTorch; what PyTorch can hold here decides how (`plan_validation`):
  - up to FULL_FP32_BYTES of fp32 weights: the whole fp32 graph against the whole model in fp32 (tolerance
    1e-3), and a quantized graph measured against the same logits;
  - up to BF16_SHARE of this machine's memory in bf16: the fp32 graph checked on a truncated copy (the first and
    the last layer, fp32, 1e-3), and the exported graph measured against the whole model in bf16;
  - larger: the truncated copy for both (the exported precision's graph of the same two layers is measured).
The whole fp32 model is loaded by transformers itself (an independent reader of the weights); the bf16 model and
the truncated copy are assembled here, a tensor at a time, from the export's own reader (no memory-mapped files,
no float32 copy of a bf16 checkpoint). The manifest records which reference each figure was measured against.
This file builds no ONNX graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .weights import Weights

FULL_FP32_BYTES = 2 * 2**30  # fp32 weights up to this are validated whole, as they always were (SmolLM2-360M: 1.45 GB)
BF16_SHARE = 0.25  # of physical memory: a bf16 reference up to this (Llama-3.2-1B here: 2.5 of 23 GB)


@dataclass(frozen=True)
class ValidationPlan:
    fp32_graph: str  # "whole" | "truncated": what the 1e-3 fp32 check runs on
    reference: str  # "float32" | "bfloat16" | "truncated": what the exported graph is measured against
    layers: tuple[int, ...]  # the checkpoint's layers in the truncated copy

    def describe(self, check: str = "exported") -> dict[str, Any]:
        """The manifest's note for the fp32 check (`check="fp32"`) or for the exported precision's measurement."""
        names = {
            "float32": "the whole model in PyTorch fp32",
            "bfloat16": "the whole model in PyTorch bf16",
            "truncated": "a truncated copy in PyTorch fp32",
        }
        reference = self.reference if check != "fp32" else "float32" if self.fp32_graph == "whole" else "truncated"
        note: dict[str, Any] = {"reference": names[reference]}
        if reference == "truncated":
            note["truncated_layers"] = list(self.layers)
        return note


def plan_validation(weights: Weights, num_layers: int, memory: int | None = None) -> ValidationPlan:
    from memgpt_runtime.session import physical_memory

    parameters = weights.parameter_count()
    layers = (0, num_layers - 1) if num_layers > 1 else (0,)
    if parameters * 4 <= FULL_FP32_BYTES:
        return ValidationPlan("whole", "float32", layers)
    if parameters * 2 <= BF16_SHARE * (memory or physical_memory()):
        return ValidationPlan("truncated", "bfloat16", layers)
    return ValidationPlan("truncated", "truncated", layers)


def truncated_config(config: Any, layers: tuple[int, ...]) -> Any:
    """A copy of `config` with only `layers` (their per-layer types kept)."""
    small = copy.deepcopy(config)
    small.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None) is not None:
        small.layer_types = [config.layer_types[i] for i in layers]
    return small


class LayerSubset(Weights):
    """`weights` seen as a model of only `layers`: layer j of the view is layer layers[j] of the checkpoint."""

    def __init__(self, weights: Weights, layers: tuple[int, ...]):
        self.weights, self.layers = weights, layers
        self._names = {}
        for name in weights.names():
            if name.startswith("model.layers."):
                index, rest = name[len("model.layers.") :].split(".", 1)
                if int(index) in layers:
                    self._names[f"model.layers.{layers.index(int(index))}.{rest}"] = name
            else:
                self._names[name] = name
        self.stored_bytes = weights.stored_bytes

    def names(self) -> list[str]:
        return list(self._names)

    def has(self, name: str) -> bool:
        return name in self._names

    def parameter_count(self) -> int:
        return sum(self.get(n).size for n in self._names)

    def get(self, name: str) -> np.ndarray:
        return self.weights.get(self._names[name])

    def get_torch(self, name: str, dtype: Any) -> Any:
        return self.weights.get_torch(self._names[name], dtype)


def model_from_weights(config: Any, weights: Weights, dtype: Any = None) -> Any:
    """A transformers causal LM of `config` whose parameters are read from `weights` one at a time."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    with init_empty_weights():  # parameters on the meta device; buffers (rotary frequencies) real
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    tied = getattr(config, "tie_word_embeddings", False)
    for name, _ in list(model.named_parameters()):
        source = "model.embed_tokens.weight" if name == "lm_head.weight" and (tied or not weights.has(name)) else name
        set_module_tensor_to_device(model, name, "cpu", value=weights.get_torch(source, dtype))
    if tied:
        model.tie_weights()
    return model.eval()


def whole_model(source: Any, dtype: Any) -> Any:
    """The whole model loaded by transformers in `dtype` (the independent reference)."""
    from transformers import AutoModelForCausalLM

    from .sources import guarded_load

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {"local_files_only": source.local_files_only}
    return guarded_load(
        source, lambda: AutoModelForCausalLM.from_pretrained(source.load_from, dtype=dtype, **kwargs).eval()
    )
