"""Check an exported graph against the PyTorch model: max abs difference of logits on a few prompts.

The graph runs through the runtime's own session and KV cache (`memgpt_runtime.session`), as generation will
run it. Three cases: a prompt with an empty past; a prefix, then the rest of the prompt fed one token at a
time with the past; and a batch of two prompts of different lengths, left-padded with an attention mask,
prefilled and then stepped once. Each call's logits (the last position of a prefill, every step) are compared
with PyTorch's at the same positions. The fp32 graph must stay within a tolerance; quantized graphs are only
measured. This file does not export or quantize.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memgpt_runtime.errors import ExportError, first_line

from .graph_spec import DecoderGraph

FP32_TOLERANCE = 1e-3
PROMPTS = (
    "The capital of France is Paris, and the capital of Japan is",
    "Hello! Count with me: 1 2 3 4",
)


@dataclass(frozen=True)
class Case:
    """One validation input: a prefill of the first `prefill` columns, then one step per remaining column."""

    name: str
    input_ids: np.ndarray  # (batch, seq) int64, left-padded
    attention_mask: np.ndarray  # (batch, seq) int64, 0 on padding
    prefill: int

    @property
    def position_ids(self) -> np.ndarray:
        # as transformers generate(): positions count real tokens only; padding gets 1 (any value works)
        pos = np.cumsum(self.attention_mask, axis=1) - 1
        return np.where(self.attention_mask == 0, 1, pos).astype(np.int64)


def validation_cases(tokenizer: Any, vocab_size: int, context_length: int) -> list[Case]:
    """Build the three cases from PROMPTS encoded by the model's own tokenizer."""
    limit = min(24, context_length - 2)
    rows = [[i for i in tokenizer(text)["input_ids"] if i < vocab_size][:limit] for text in PROMPTS]
    rows = [r if len(r) >= 4 else (r + list(range(4)))[:4] for r in rows]  # tiny tokenizers may merge a lot
    long, short = rows[0], rows[1][: max(2, len(rows[0]) - 3)]
    single = np.array([long], dtype=np.int64)
    width = max(len(long), len(short))
    padded = np.zeros((2, width + 1), dtype=np.int64)  # (2, width + 1): the last column is the decode step
    mask = np.zeros_like(padded)
    for row, ids in enumerate((long, short)):
        padded[row, width - len(ids) : width] = ids
        mask[row, width - len(ids) :] = 1
    padded[:, width] = long[0]  # the token fed in the single decode step
    return [
        Case("prompt", single, np.ones_like(single), len(long)),
        Case("prompt_then_past", single, np.ones_like(single), len(long) - 3),  # then three steps with the past
        Case("left_padded_batch", padded, mask, width),
    ]


def torch_reference(model: Any, cases: list[Case]) -> list[np.ndarray]:
    """Full-sequence PyTorch logits per case: (batch, seq, vocab) float32."""
    feeds = [dict(input_ids=c.input_ids, attention_mask=c.attention_mask, position_ids=c.position_ids) for c in cases]
    return torch_logits(model, feeds)


def torch_logits(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """PyTorch logits, (batch, seq, vocab) float32, of one forward pass without a cache per feed of numpy inputs;
    feeds with the same inputs share one pass (two of the validation cases feed the same prompt)."""
    import torch

    done: dict[tuple, np.ndarray] = {}
    logits = []
    with torch.no_grad():
        for feed in feeds:
            key = tuple((name, array.shape, array.dtype.str, array.tobytes()) for name, array in sorted(feed.items()))
            if key not in done:
                inputs = {name: torch.from_numpy(array) for name, array in feed.items()}
                done[key] = model(**inputs, use_cache=False).logits.float().numpy()
            logits.append(done[key])
    return logits


def compare_graph(path: Path, graph: DecoderGraph, cases: list[Case], references: list[np.ndarray]) -> dict[str, Any]:
    """Run every case through the ONNX graph; return per-case max abs diff and top-1 agreement."""
    from memgpt_runtime.session import DecoderSession

    longest = max(case.input_ids.shape[1] for case in cases)
    session = DecoderSession(path, graph.graph, graph.kv_cache, graph.vocab_size, longest)
    results: dict[str, Any] = {}
    for case, ref in zip(cases, references):
        try:
            got, columns = _run_chunks(session, case)  # (batch, calls, vocab), the position of each call
        except RuntimeError as exc:  # onnxruntime's kernel errors
            first = first_line(exc, empty="unknown error")
            raise ExportError(f"the exported graph fails on case {case.name} ({first}); please report it") from None
        want = ref[:, columns, :]
        if not np.isfinite(got).all():
            raise ExportError(f"the exported graph gives non-finite logits on case {case.name}; the export is broken")
        results[case.name] = case_figures(got, want)
    return results


def validate_fp32(path: Path, graph: DecoderGraph, cases: list[Case], references: list[np.ndarray]) -> dict[str, Any]:
    """Compare the fp32 graph with PyTorch; raise ExportError above FP32_TOLERANCE, else return the figures."""
    return fp32_report(compare_graph(path, graph, cases, references))


def measure_quantized(
    path: Path, graph: DecoderGraph, cases: list[Case], references: list[np.ndarray]
) -> dict[str, Any]:
    """Compare a quantized graph with PyTorch fp32; figures only (no tolerance: quantization changes logits)."""
    return quantized_report(compare_graph(path, graph, cases, references))


def case_figures(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """Max abs difference and top-1 agreement of logits (..., vocab) against PyTorch's at the same positions."""
    return {
        "max_abs_diff": float(np.abs(got - want).max()),
        "top1_agreement": float((got.argmax(-1) == want.argmax(-1)).mean()),
    }


def fp32_report(results: dict[str, Any]) -> dict[str, Any]:
    """The manifest's fp32 entry from per-case figures; ExportError if any case is above FP32_TOLERANCE."""
    worst = max(r["max_abs_diff"] for r in results.values())
    report = {"tolerance": FP32_TOLERANCE, "max_abs_diff": worst, "passed": worst <= FP32_TOLERANCE, "cases": results}
    if not report["passed"]:
        name = max(results, key=lambda n: results[n]["max_abs_diff"])
        raise ExportError(
            f"the fp32 ONNX graph differs from PyTorch by {worst:.3g} on case {name} (tolerance {FP32_TOLERANCE:g}); "
            "the export is wrong for this model: please report it"
        )
    return report


def quantized_report(results: dict[str, Any]) -> dict[str, Any]:
    """The manifest's entry for a quantized graph from per-case figures (worst case of each)."""
    return {
        "max_abs_diff": max(r["max_abs_diff"] for r in results.values()),
        "top1_agreement": min(r["top1_agreement"] for r in results.values()),
        "cases": results,
    }


def _run_chunks(session: Any, case: Case) -> tuple[np.ndarray, list[int]]:
    """Prefill the first chunk, then step one token at a time; logits of each call and their positions."""
    rows, width = case.input_ids.shape
    state = session.new_state(rows, width)
    first = case.prefill
    logits = [state.prefill(case.input_ids[:, :first], case.attention_mask[:, :first]).copy()]
    columns = [first - 1]
    for column in range(first, width):
        logits.append(state.step(case.input_ids[:, column]).copy())
        columns.append(column)
    return np.stack(logits, axis=1), columns  # (batch, calls, vocab)
