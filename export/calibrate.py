"""Measure the inputs of every weight MatMul on text the model writes itself: their Gram matrices X^T X / positions.

The int4 quantizer weighs each layer weight's rounding error by the mean square of the activation it multiplies
(the diagonal of the Gram matrix: the "importance matrix" of llama.cpp's imatrix quantization) and rounds the LM
head with GPTQ (`gptq.py`), which needs the whole (K, K) matrix; so only the nodes asked for in `full` get the
whole matrix, the others its diagonal (for SmolLM2-135M, 0.8 GB of float64 matrices would be kept otherwise, and
their products are most of the time). This file gets them by running the fp32 graph
with onnxruntime, the input of every weight MatMul added as a graph output: it samples CALIBRATION_SEQUENCES
texts of CALIBRATION_TOKENS tokens together, one token per step with the graph's own KV cache (temperature 1, a
seeded generator, every text starting from token id 0), and sums x x^T over every position of every text, the
LM head's input included (a fused graph computes the head at the newest position only, which with one token
per step is every position). About 40 s for SmolLM2-135M; no tokenizer or data file is needed.

Only a decoder graph with `logits`, `past_*` cache inputs and the input names of this project's two layouts
(memgpt_runtime/manifest.py, GraphSpec and KVCacheSpec) is run; any other graph (an encoder, a
cross-attention decoder) or one too large to hand to onnxruntime in memory gets nothing, and the quantizer
falls back to unweighted codes. 2,048 positions, because GPTQ shapes each error to the calibration's
activations and needs text enough to span them (docs/quantization.md). This file does not quantize.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

CALIBRATION_SEQUENCES = 16
CALIBRATION_TOKENS = 128  # per sequence, the start token included
SEED = 0
START_TOKEN = 0
PROTOBUF_LIMIT = 2**31 - 1  # bytes; onnxruntime takes an in-memory model only below this
FOLD_EVERY = 32  # steps of activations kept before they are folded into the Gram matrices (memory against speed)


def input_grams(
    proto: Any,
    nodes: list[str],
    full: Iterable[str] = (),
    ids: list[int] | None = None,
    tokens: int = CALIBRATION_TOKENS,
    sequences: int = CALIBRATION_SEQUENCES,
    seed: int = SEED,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per node in `nodes`: the float64 X^T X / positions of its input over the calibration text, (K, K) for the
    nodes in `full` and its diagonal (K,) (each input channel's mean square) for the others; and a note.

    The text is `ids` (one sequence, read as given) if given, else `sequences` texts of `tokens` ids sampled from
    the graph with `seed`. Returns ({}, a note saying why) for a graph this file cannot run. The proto is left
    as it was.
    """
    cache = _cache_protocol(proto)
    if cache is None:
        return {}, {"source": "none (not a decoder graph with a KV cache): unweighted errors"}
    if proto.ByteSize() > PROTOBUF_LIMIT:
        return {}, {"source": "none (graph above 2GB): unweighted errors"}
    wanted = set(nodes)
    by_node = {n.name: n.input[0] for n in proto.graph.node if n.name in wanted}
    tensors = sorted(set(by_node.values()))
    whole = {by_node[name] for name in full if name in by_node}  # the tensors whose whole matrix is wanted
    session = _session_with_outputs(proto, tensors)
    if ids is not None:
        text = np.array([ids], np.int64)  # (1, length): read, not sampled
        note: dict[str, Any] = {"source": "given token ids", "tokens": len(ids)}
    else:
        text = np.full((sequences, tokens), START_TOKEN, np.int64)  # (rows, length), filled as we sample
        note = {
            "source": "text sampled from the fp32 model",
            "seed": seed,
            "start_token": START_TOKEN,
            "sequences": sequences,
            "tokens": sequences * tokens,
        }
    grams = _run_text(session, cache, text, tensors, whole, None if ids is not None else np.random.default_rng(seed))
    return {node: grams[tensor] for node, tensor in by_node.items()}, note


def _run_text(
    session: Any,
    cache: _CacheProtocol,
    text: np.ndarray,
    tensors: list[str],
    whole: set[str],
    rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """Step through `text` (rows, length) one token per row at a time, sampling position t + 1 when `rng` is given.

    Returns the Gram matrix of each of `tensors` over every position of every row: whole for those in `whole`,
    its diagonal for the others.
    """
    rows, length = text.shape
    pasts = cache.empty(rows, length)
    sums: dict[str, np.ndarray] = {}
    pending: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    for t in range(length):
        values = session.run(["logits", *cache.presents, *tensors], {**cache.feeds(text[:, t : t + 1], t), **pasts})
        logits, presents, seen = values[0], values[1 : 1 + len(cache.presents)], values[1 + len(cache.presents) :]
        pasts = dict(zip(cache.pasts, presents))
        for name, x in zip(tensors, seen):
            pending[name].append(x.reshape(-1, x.shape[-1]))  # (rows, K): this step's input of the node
        if (t + 1) % FOLD_EVERY == 0 or t + 1 == length:
            for name in tensors:
                x = np.concatenate(pending[name]).astype(np.float32)  # (positions, K)
                # float32 products: twice as fast; (K, K) or its diagonal (K,)
                gram = x.T @ x if name in whole else np.einsum("pk,pk->k", x, x)
                sums[name] = sums.get(name, 0.0) + gram.astype(np.float64)
                pending[name] = []
        if rng is not None and t + 1 < length:
            last = logits.reshape(rows, -1, logits.shape[-1])[:, -1].astype(np.float64)  # (rows, vocab)
            p = np.exp(last - last.max(axis=1, keepdims=True))
            text[:, t + 1] = [rng.choice(p.shape[1], p=row / row.sum()) for row in p]
    return {name: total / (rows * length) for name, total in sums.items()}


class _CacheProtocol:
    """How to feed one step of a decoder graph with a KV cache: the names and shapes of its two layouts.

    "shared" (seqlens_k present, the fused graphs): past and present are (batch, kv_heads, capacity, head_size)
    buffers of the same shape, the step's position given by seqlens_k; "concat" (optimum graphs): present is
    past plus the new position, the position given by attention_mask and position_ids.
    """

    def __init__(self, inputs: dict[str, Any], dims: dict[str, list[int | None]], dtypes: dict[str, Any]):
        self.inputs, self.dims, self.dtypes = inputs, dims, dtypes
        self.shared = "seqlens_k" in inputs
        self.pasts = [name for name in inputs if name.startswith("past")]
        self.presents = [name.replace("past_key_values", "present") for name in self.pasts]

    def empty(self, rows: int, length: int) -> dict[str, np.ndarray]:
        return {
            name: np.zeros(
                (rows, self.dims[name][1], length if self.shared else 0, self.dims[name][3]), self.dtypes[name]
            )
            for name in self.pasts
        }

    def feeds(self, ids: np.ndarray, t: int) -> dict[str, np.ndarray]:
        """Feeds (caches aside) of one step: (rows, 1) ids at position t."""
        rows = ids.shape[0]
        values = {
            "input_ids": ids,
            "attention_mask": np.ones((rows, t + 1)),
            "position_ids": np.full((rows, 1), t),
            "seqlens_k": np.full(rows, t),
            "total_sequence_length": np.array(t + 1),
            "last_index": np.zeros(rows),
        }
        return {name: values[name].astype(self.dtypes[name]) for name in self.inputs if name in values}


def _session_with_outputs(proto: Any, tensors: list[str]) -> Any:
    """An onnxruntime session over `proto` with `tensors` (float activations) as extra outputs."""
    from onnx import TensorProto, helper

    graph = proto.graph
    graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    try:
        return _session(proto)
    finally:
        del graph.output[len(graph.output) - len(tensors) :]  # subtle: the caller's proto keeps its own outputs


def _session(proto: Any) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(
        proto.SerializeToString(), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


def session_options() -> Any:
    """The runtime's session options, with the thread pool's spinning off: a calibration step is many small
    parallel sections, and on a shared machine threads spinning between them took ~45% of its CPU time
    (docs/streaming-export.md)."""
    from memgpt_runtime.session import make_session_options

    options = make_session_options()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _cache_protocol(proto: Any) -> _CacheProtocol | None:
    """The step protocol of a decoder graph with a KV cache in one of this project's layouts; None if unsure."""
    from onnx import helper

    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    outputs = {o.name for o in proto.graph.output}
    if "logits" not in outputs or "input_ids" not in inputs:
        return None
    caches = [name for name in inputs if name.startswith("past")]
    known = {"input_ids", "attention_mask", "position_ids", "seqlens_k", "total_sequence_length", "last_index"}
    if not caches or any(name not in known and name not in caches for name in inputs):
        return None
    if any(name.replace("past_key_values", "present") not in outputs for name in caches):
        return None
    dims = {name: [d.dim_value if d.HasField("dim_value") else None for d in inputs[name].shape.dim] for name in caches}
    if any(len(d) != 4 or d[1] is None or d[3] is None for d in dims.values()):
        return None
    dtypes = {name: helper.tensor_dtype_to_np_dtype(t.elem_type) for name, t in inputs.items()}
    return _CacheProtocol(inputs, dims, dtypes)
