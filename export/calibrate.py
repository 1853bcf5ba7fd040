"""Measure how strongly each input channel of every weight MatMul is driven, on text the model writes itself.

The int4 quantizer weighs each weight's rounding error by the mean square of the activation that multiplies it
(the diagonal "importance matrix" of llama.cpp's imatrix quantization). This file gets those mean squares by
running the fp32 graph with onnxruntime, the input of every weight MatMul added as a graph output: it samples
CALIBRATION_TOKENS tokens from the model (temperature 1, a seeded generator, starting from token id 0),
re-running the whole prefix with an empty cache at every step so no cache bookkeeping is needed (about 10 s for
SmolLM2-135M), then runs that text once more and averages the squares over its positions. No tokenizer or data
file is needed. A fused graph computes its LM head at the last position only, so the head's figure comes from
one position (the int4 scheme keeps the head at 8 bits, round-to-nearest, and does not use it).

Only a decoder graph with `logits`, `past_*` cache inputs and the input names of this project's two layouts
(memgpt_runtime/manifest.py, GraphSpec and KVCacheSpec) is run; any other graph (an encoder, a
cross-attention decoder) or one too large to hand to onnxruntime in memory gets no importance, and the quantizer
falls back to unweighted errors. Perplexity of SmolLM2-135M (benchmarks/data/english.txt, fp32 26.505), all
layer weights 4-bit in blocks of 32 and the LM head 8-bit: unweighted 29.63; weighted by this file's 128 tokens
27.32. The source of the text matters little as long as it is text: weights from 513 tokens sampled by PyTorch
gave 27.57, from the 29 tokens of two English prompts 27.33, from 2,048 random token ids 28.27. This file does
not quantize.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CALIBRATION_TOKENS = 128
SEED = 0
START_TOKEN = 0
PROTOBUF_LIMIT = 2**31 - 1  # bytes; onnxruntime takes an in-memory model only below this


def input_importance(proto: Any, nodes: list[str], ids: list[int] | None = None, tokens: int = CALIBRATION_TOKENS,
                     seed: int = SEED) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Per node in `nodes`: (K,) mean square of its input over the calibration text; and a manifest note.

    The text is `ids` if given, else `tokens` ids sampled from the graph with `seed`. Returns ({}, a note saying
    why) for a graph this file cannot run. The proto is left as it was.
    """
    feeds = _prefill_feeds(proto)
    if feeds is None:
        return {}, {"source": "none (not a decoder graph with a KV cache): unweighted errors"}
    if proto.ByteSize() > PROTOBUF_LIMIT:
        return {}, {"source": "none (graph above 2GB): unweighted errors"}
    wanted = set(nodes)
    by_node = {n.name: n.input[0] for n in proto.graph.node if n.name in wanted}
    tensors = sorted(set(by_node.values()))
    session = _session_with_outputs(proto, tensors)
    note: dict[str, Any] = {"source": "given token ids"}
    if ids is None:
        ids = sample_text(session, feeds, tokens, np.random.default_rng(seed))
        note = {"source": "text sampled from the fp32 model", "seed": seed, "start_token": START_TOKEN}
    values = session.run(tensors, feeds(list(ids)))
    importance = {}
    for node, tensor in by_node.items():
        x = values[tensors.index(tensor)]
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)  # (positions, K)
        importance[node] = (x * x).mean(axis=0)
    return importance, {**note, "tokens": len(ids)}


def sample_text(session: Any, feeds: Any, tokens: int, rng: np.random.Generator) -> list[int]:
    """`tokens` ids sampled at temperature 1 from the graph, starting from START_TOKEN."""
    ids = [START_TOKEN]
    while len(ids) < tokens:
        (logits,) = session.run(["logits"], feeds(ids))
        last = logits.reshape(-1, logits.shape[-1])[-1].astype(np.float64)  # (vocab,): the last position's logits
        p = np.exp(last - last.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return ids


def _session_with_outputs(proto: Any, tensors: list[str]) -> Any:
    """An onnxruntime session over `proto` with `tensors` (float activations) as extra outputs."""
    from onnx import TensorProto, helper

    graph = proto.graph
    graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    try:
        return _session(proto)
    finally:
        del graph.output[len(graph.output) - len(tensors):]  # subtle: the caller's proto keeps its own outputs


def _session(proto: Any) -> Any:
    import onnxruntime as ort

    from memgpt_runtime.session import make_session_options

    return ort.InferenceSession(proto.SerializeToString(), sess_options=make_session_options(),
                                providers=["CPUExecutionProvider"])  # fmt: skip


def _prefill_feeds(proto: Any) -> Any:
    """A function ids -> the feeds of one prefill of (1, len(ids)) with an empty cache; None if unsure how.

    "shared" layout (seqlens_k present): the cache inputs are (batch, kv_heads, capacity, head_size) buffers;
    "concat" layout: (batch, kv_heads, past_len, head_size) with past_len 0.
    """
    from onnx import helper

    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    if "logits" not in {o.name for o in proto.graph.output} or "input_ids" not in inputs:
        return None
    shared = "seqlens_k" in inputs
    caches = [name for name in inputs if name.startswith("past")]
    known = {"input_ids", "attention_mask", "position_ids", "seqlens_k", "total_sequence_length", "last_index"}
    if not caches or any(name not in known and name not in caches for name in inputs):
        return None
    dims = {name: [d.dim_value if d.HasField("dim_value") else None for d in inputs[name].shape.dim] for name in caches}
    if any(len(d) != 4 or d[1] is None or d[3] is None for d in dims.values()):
        return None
    dtype = {name: helper.tensor_dtype_to_np_dtype(t.elem_type) for name, t in inputs.items()}

    def feeds(ids: list[int]) -> dict[str, np.ndarray]:
        n = len(ids)
        values = {
            "input_ids": np.array([ids]),
            "attention_mask": np.ones((1, n)),
            "position_ids": np.arange(n)[None, :],
            "seqlens_k": np.array([n - 1]),
            "total_sequence_length": np.array(n),
            "last_index": np.array([n - 1]),
        }
        out = {name: values[name].astype(dtype[name]) for name in inputs if name in values}
        for name in caches:
            _, heads, _, size = dims[name]
            out[name] = np.zeros((1, heads, n if shared else 0, size), dtype[name])
        return out

    return feeds
