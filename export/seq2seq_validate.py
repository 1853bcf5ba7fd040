"""Check an encoder-decoder export against the PyTorch model: max abs difference of logits, step by step.

The two graphs run with onnxruntime directly, as generation runs them: the encoder once per batch of sources,
then the decoder one token per call, its self-attention presents fed back as the next past and the encoder's
cross-attention keys/values fed at every step. PyTorch computes the same logits in one forward pass over the
whole decoder input. Two cases: one source, and a batch of two sources of different lengths padded on the
right (as these models' tokenizers pad) with an attention mask; each decodes DECODER_STEPS tokens. The fp32
graphs must stay within `validate.FP32_TOLERANCE`; quantized graphs are only measured.
It does not use the runtime's generation code, and does not export or quantize.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError, first_line
from memgpt_runtime.manifest import layer_names

from .seq2seq_graph import Seq2SeqGraphs
from .validate import case_figures, fp32_report, quantized_report, torch_logits

SOURCES = (
    "translate English to German: The house is wonderful, and the garden behind it is large.",
    "summarize: The tower is 324 metres tall.",
)
SOURCE_LIMIT = 32  # tokens per source at most (the closing special token is kept)
DECODER_STEPS = 6


@dataclass(frozen=True)
class Seq2SeqCase:
    """One validation input: sources for the encoder, and the tokens fed to the decoder, one per step."""

    name: str
    input_ids: np.ndarray  # (batch, src) int64, padded on the right
    attention_mask: np.ndarray  # (batch, src) int64, 0 on padding
    decoder_input_ids: np.ndarray  # (batch, steps) int64, starting with the decoder start token


def seq2seq_cases(tokenizer: Any, vocab_size: int, max_source_length: int, decoder_start: int) -> list[Seq2SeqCase]:
    """Build the two cases from SOURCES encoded by the model's own tokenizer."""
    limit = min(SOURCE_LIMIT, max_source_length)
    rows = []
    for text in SOURCES:
        ids = [i for i in tokenizer(text)["input_ids"] if i < vocab_size]
        rows.append(ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:])
    long = rows[0] if len(rows[0]) >= 4 else (rows[0] + list(range(4)))[:4]  # tiny tokenizers may merge a lot
    short = rows[1] if len(rows[1]) < len(long) else rows[1][: len(long) - 2] + rows[1][-1:]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sources = np.full((2, len(long)), pad, dtype=np.int64)  # (2, src)
    mask = np.zeros_like(sources)
    for row, ids in enumerate((long, short)):
        sources[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    steps = DECODER_STEPS - 1
    decoder = np.array(
        [[decoder_start, *(long * steps)[:steps]], [decoder_start, *(short[::-1] * steps)[:steps]]], dtype=np.int64
    )  # (2, DECODER_STEPS); any tokens do, these differ per row
    return [
        Seq2SeqCase("one_source", sources[:1], mask[:1], decoder[:1]),
        Seq2SeqCase("right_padded_batch", sources, mask, decoder),
    ]


def seq2seq_torch_reference(model: Any, cases: list[Seq2SeqCase]) -> list[np.ndarray]:
    """PyTorch logits over each case's whole decoder input: (batch, steps, vocab) float32."""
    feeds = [
        dict(input_ids=c.input_ids, attention_mask=c.attention_mask, decoder_input_ids=c.decoder_input_ids)
        for c in cases
    ]
    return torch_logits(model, feeds)


def compare_seq2seq(
    encoder_path: Path,
    decoder_path: Path,
    graphs: Seq2SeqGraphs,
    cases: list[Seq2SeqCase],
    references: list[np.ndarray],
) -> dict[str, Any]:
    """Run every case through the two graphs; return per-case max abs diff and top-1 agreement."""
    encoder, decoder = _session(encoder_path), _session(decoder_path)
    results: dict[str, Any] = {}
    for case, want in zip(cases, references):
        try:
            got = run_graphs(encoder, decoder, graphs, case)  # (batch, steps, vocab)
        except RuntimeError as exc:  # onnxruntime's kernel errors
            first = first_line(exc, empty="unknown error")
            raise ExportError(f"the exported graphs fail on case {case.name} ({first}); please report it") from None
        if not np.isfinite(got).all():
            raise ExportError(f"the exported graphs give non-finite logits on case {case.name}; the export is broken")
        results[case.name] = case_figures(got, want)
    return results


def validate_seq2seq_fp32(
    graphs: Seq2SeqGraphs, cases: list[Seq2SeqCase], references: list[np.ndarray]
) -> dict[str, Any]:
    """Compare the fp32 graphs with PyTorch; raise ExportError above the tolerance, else return the figures."""
    return fp32_report(compare_seq2seq(graphs.encoder_path, graphs.decoder_path, graphs, cases, references))


def measure_seq2seq(
    encoder_path: Path,
    decoder_path: Path,
    graphs: Seq2SeqGraphs,
    cases: list[Seq2SeqCase],
    references: list[np.ndarray],
) -> dict[str, Any]:
    """Compare quantized graphs with PyTorch fp32; figures only (no tolerance: quantization changes logits)."""
    return quantized_report(compare_seq2seq(encoder_path, decoder_path, graphs, cases, references))


def run_graphs(encoder: Any, decoder: Any, graphs: Seq2SeqGraphs, case: Seq2SeqCase) -> np.ndarray:
    """Encoder once, then one decoder call per column of `case.decoder_input_ids`; logits (batch, steps, vocab)."""
    enc, graph, kv = graphs.encoder, graphs.decoder.graph, graphs.decoder.kv_cache
    cross_names = layer_names(enc.num_layers, enc.cross_key, enc.cross_value)
    cross = encoder.run(cross_names, {enc.input_ids: case.input_ids, enc.attention_mask: case.attention_mask})
    fixed = {graph.encoder_attention_mask: case.attention_mask}
    fixed.update(zip(layer_names(enc.num_layers, graph.cross_key, graph.cross_value), cross))
    rows = case.input_ids.shape[0]
    past_names, present_names = kv.past_names(), kv.present_names()
    past = [np.zeros((rows, kv.num_kv_heads, 0, kv.head_size), dtype=np.float32)] * len(past_names)
    logits = []
    for column in range(case.decoder_input_ids.shape[1]):
        feed = {graph.input_ids: case.decoder_input_ids[:, column : column + 1], **fixed, **dict(zip(past_names, past))}
        step_logits, *past = decoder.run([graph.logits, *present_names], feed)  # (batch, 1, vocab), presents
        logits.append(step_logits[:, -1, :])
    return np.stack(logits, axis=1)  # (batch, steps, vocab)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a graph it cannot load
        raise ExportError(
            f"onnxruntime cannot load the exported {path.name} ({first_line(exc)}); please report it"
        ) from None
