"""Calibrate int4 on a draft graph: sample the calibration text from it and measure every weight's input as it goes.

`calibrate.py` does this on an in-memory fp32 proto; a streamed export has its draft on disk instead (the fp32
graph when the model is small enough to validate whole, else an int8 one: reference.py), so this file runs that
file with the input of every weight as an extra output, its KV cache bound in place (the draft's "shared"
layout, as the runtime binds it), and the same text as calibrate.py: CALIBRATION_SEQUENCES texts of
CALIBRATION_TOKENS tokens sampled together from START_TOKEN with a seeded generator, temperature 1, one token per
step. What it keeps is per weight: the mean square of each input channel (the diagonal of X^T X / positions),
and the whole matrix for the LM head (GPTQ); nothing else crosses the steps but the KV cache. With `text` given,
it reads that text instead of sampling. This file does not quantize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import CALIBRATION_SEQUENCES, CALIBRATION_TOKENS, FOLD_EVERY, SEED, START_TOKEN, session_options
from .graph_spec import DecoderGraph

CALIBRATION_FILE = "calibration.onnx"  # the draft's nodes with the weights' inputs as outputs; its weights stay put


def calibrate_on_draft(
    draft: Path,
    decoder: DecoderGraph,
    inputs: dict[str, str],
    full: tuple[str, ...],
    precision: str,
    text: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray]:
    """Per node of `inputs` (node -> the tensor it multiplies): X^T X / positions of that tensor over the text, the
    whole (K, K) matrix for the nodes in `full`, its diagonal (K,) for the others; the note for the manifest; and
    the text (rows, tokens) it ran: sampled from the draft (named `precision` in the note), or `text` as given."""
    session = _session_with_inputs(draft, sorted(set(inputs.values())))
    rng = None if text is not None else np.random.default_rng(SEED)
    if text is None:
        text = np.full((CALIBRATION_SEQUENCES, CALIBRATION_TOKENS), START_TOKEN, np.int64)  # filled as we sample
    whole = {inputs[name] for name in full if name in inputs}
    grams = _run(session, decoder, text, sorted(set(inputs.values())), whole, rng)
    rows, tokens = text.shape
    if rng is None:
        note: dict[str, Any] = {"source": "given token ids", "tokens": rows * tokens}
    else:
        note = {
            "source": f"text sampled from the {precision} model",
            "seed": SEED,
            "start_token": START_TOKEN,
            "sequences": rows,
            "tokens": rows * tokens,
        }
    return {node: grams[tensor] for node, tensor in inputs.items()}, note, text


def _session_with_inputs(draft: Path, tensors: list[str]) -> Any:
    """An onnxruntime session over the draft with `tensors` as extra outputs (a copy of its nodes, same weights)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    proto = onnx.load(str(draft), load_external_data=False)  # references to model.onnx.data, which stays where it is
    proto.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    path = draft.parent / CALIBRATION_FILE
    onnx.save_model(proto, str(path))
    return ort.InferenceSession(str(path), sess_options=session_options(), providers=["CPUExecutionProvider"])


def _run(
    session: Any,
    decoder: DecoderGraph,
    text: np.ndarray,
    tensors: list[str],
    whole: set[str],
    rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """Step through `text` (rows, length), one token per row at a time, sampling position t + 1 when `rng` is given
    (as calibrate._run_text); the Gram matrix (or its diagonal) of each of `tensors` over every position."""
    graph, kv = decoder.graph, decoder.kv_cache
    rows, length = text.shape
    binding = session.io_binding()
    caches = []
    for i in range(kv.num_layers):  # (rows, kv_heads, length, head_size), bound as both past and present
        for past, present in ((kv.past_key, kv.present_key), (kv.past_value, kv.present_value)):
            buffer = np.zeros((rows, kv.num_kv_heads, length, kv.head_size), np.float32)
            binding.bind_input(past.format(i=i), "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
            binding.bind_output(present.format(i=i), "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
            caches.append(buffer)
    logits = np.empty((rows, decoder.vocab_size), np.float32)
    binding.bind_output(graph.logits, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
    for name in tensors:
        binding.bind_output(name, "cpu")
    last = np.zeros(rows, np.int64)
    sums: dict[str, np.ndarray] = {}  # float64: (K, K) for the tensors in `whole`, (K,) for the others
    pending: dict[str, list[np.ndarray]] = {name: [] for name in whole}
    for t in range(length):
        ids = np.ascontiguousarray(text[:, t : t + 1])
        binding.bind_cpu_input(graph.input_ids, ids)
        binding.bind_cpu_input(graph.seqlens_k, np.full(rows, t, np.int32))
        binding.bind_cpu_input(graph.total_sequence_length, np.array(t + 1, np.int32))
        binding.bind_cpu_input(graph.last_index, last)
        session.run_with_iobinding(binding)
        seen = binding.get_outputs()[-len(tensors) :] if tensors else []
        for name, value in zip(tensors, seen):
            x = value.numpy()
            x = x.reshape(-1, x.shape[-1])  # (rows, K): this step's input of the node
            if name in whole:  # kept for FOLD_EVERY steps: one (positions, K) product is faster than many
                pending[name].append(x.copy())  # subtle: a view of a buffer the binding reuses at the next step
            else:  # the diagonal, folded at once: nothing but (K,) sums crosses the steps
                sums[name] = sums.get(name, 0.0) + np.einsum("pk,pk->k", x, x).astype(np.float64)
        if (t + 1) % FOLD_EVERY == 0 or t + 1 == length:
            for name in whole:
                x = np.concatenate(pending[name]).astype(np.float32)  # (positions, K)
                sums[name] = sums.get(name, 0.0) + (x.T @ x).astype(np.float64)  # (K, K)
                pending[name] = []
        if rng is not None and t + 1 < length:
            scores = logits.astype(np.float64)  # (rows, vocab)
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            text[:, t + 1] = [rng.choice(p.shape[1], p=row / row.sum()) for row in p]
    return {name: total / (rows * length) for name, total in sums.items()}
