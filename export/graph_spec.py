"""What an exported decoder graph is, for the stages after it: its runtime names (`DecoderGraph`) and the KV cache
names both graph builders give it (optimum's trace and the fused graph). No ONNX or torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from memgpt_runtime.manifest import GraphSpec, KVCacheSpec

PAST_KEY, PAST_VALUE = "past_key_values.{i}.key", "past_key_values.{i}.value"
PRESENT_KEY, PRESENT_VALUE = "present.{i}.key", "present.{i}.value"


@dataclass(frozen=True)
class DecoderGraph:
    """What the runtime and the validator need to know to feed the graph."""

    graph: GraphSpec
    kv_cache: KVCacheSpec
    vocab_size: int  # the logits dimension, which may exceed the tokenizer's vocabulary (padding rows)
