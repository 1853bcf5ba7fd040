"""The timed workloads of the encoder-decoder part, on the same engine interface as workloads.py.

Rows are sources (token ids, `</s>` included); an engine returns exactly `new_tokens` decoder ids per row, the
decoder start token left out. Each workload runs `warmup` untimed times, then `repeats` timed times:
(1) translate: greedy, one source: wall time (encoder included), time to first token, and decode tokens/s over the
    steps after the first ((n - 1) / (last token time - first token time));
(2) beam: the same source, `beams` beams: wall time;  (3) batch: `batch_size` sources of different lengths,
right-padded with an attention mask, greedy: new tokens/s.
`agreement` (greedy ids of a few sources, compared with PyTorch's by the suite) is not timed.
"""

from __future__ import annotations

import time

from .workloads import batch_figures, greedy_figures, repeat, stats


def translate(engine, inputs: dict, s: dict) -> dict:
    return {"source_tokens": len(inputs["source"]), **greedy_figures(engine, inputs["source"], s["new_tokens"], s)}


def beam(engine, inputs: dict, s: dict) -> dict:
    n = s["new_tokens"]

    def run() -> float:
        start = time.perf_counter()
        out = engine.generate([inputs["source"]], n, beams=s["beams"])
        seconds = time.perf_counter() - start
        if len(out[0]) != n:
            raise RuntimeError(f"beam search gave {len(out[0])} new tokens, expected {n}")
        return seconds

    return {"beams": s["beams"], "new_tokens": n, "seconds": stats(repeat(run, s["warmup"], s["repeats"]))}


def batch(engine, inputs: dict, s: dict) -> dict:
    rows = inputs["batch"]
    return {"source_tokens": [len(r) for r in rows], **batch_figures(engine, rows, s["new_tokens"], s)}


def agreement(engine, inputs: dict, s: dict) -> dict:
    """Greedy ids of each agreement source, one source at a time (untimed)."""
    return {"continuations": [engine.generate([source], s["new_tokens"])[0] for source in inputs["agreement"]]}


SPEED = {"translate": translate, "beam": beam, "batch": batch}
WORKLOADS = {**SPEED, "agreement": agreement}
